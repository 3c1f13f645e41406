"""``bgtasks.prefect_server`` with every HTTP request and websocket written to a file (bench only).

``BENCH_REQUEST_LOG=<path> python -m bench._profiled_server server start ...``: one JSON
line per request (its time, method, path with ids as ``{id}``, status, wall time, and whether
the benchmark itself sent it: header ``X-Bgtasks-Bench``), for
``bench/profile_run.py``'s breakdown. The product's server is unchanged: this wraps the
app before :func:`bgtasks.prefect_server.guard_server_app` wraps it again.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class RequestLog:
    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.out = open(path, "a", buffering=1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [101 if scope["type"] == "websocket" else 0]

        async def recorded_send(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, recorded_send)
        finally:
            self.out.write(json.dumps({
                "t": time.time(), "method": scope.get("method", "WS"),
                "path": _ID.sub("{id}", scope.get("path", "")), "status": status[0],
                "ms": round((time.perf_counter() - t0) * 1000, 2),
                "bench": any(k == b"x-bgtasks-bench" for k, _ in scope.get("headers", ())),
            }) + "\n")


def main() -> None:
    import uvicorn

    from bgtasks import prefect_server

    serve = uvicorn.run
    path = os.environ["BENCH_REQUEST_LOG"]

    def run(app: Any, *args: Any, **kwargs: Any) -> Any:
        return serve(RequestLog(app, path), *args, **kwargs)

    uvicorn.run = run  # type: ignore[assignment]
    prefect_server.main()


if __name__ == "__main__":
    main()
