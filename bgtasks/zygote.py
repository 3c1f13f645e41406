"""The warm worker's zygote: a pre-imported parent that forks one child per flow run.

Started by :class:`bgtasks.warm_worker.WarmWorker` as ``python -m bgtasks.zygote``.
It imports Prefect, its flow engine and every registered handler once, starts no
thread, then serves requests from the worker, one JSON object a line:

- stdin  ``{"op": "run", "req": ID, "flow_run_id": UUID, "env": {...}, "flow_run": JSON,
  "related": {"kind.id": JSON}}`` (the objects the worker read for the run, for its events)
- stdout ``{"op": "spawned", "req": ID, "pid": PID}`` once the child exists,
  ``{"op": "exited", "pid": PID, "code": N}`` when it has been reaped
  (``N < 0``: killed by signal ``-N``), ``{"op": "ready"}`` once at start.

Each child is a copy of the warm parent: it starts its own session (so the
worker can signal the whole group), points stdin at /dev/null and stdout at the
worker's log, applies the run's environment, runs the same steps as
``python -m prefect.engine`` and always leaves with ``os._exit``. A child that
crashes, leaks or calls ``os._exit`` takes only itself down.

The zygote never talks to the Prefect API: the worker process owns the client
and the states: a client's connections and event loop do not survive a fork.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import sys
import threading
import traceback
from typing import Any

from bgtasks.prefect_seam import child_env, prefill_related, run_engine

#: The pipe protocol's operations (the worker's side is bgtasks.warm_worker.ZygoteProcess).
RUN, SPAWNED, EXITED, READY = "run", "spawned", "exited", "ready"


def message(op: str, **fields: Any) -> str:
    """One protocol line: ``{"op": op, **fields}`` as JSON and a newline."""
    return json.dumps({"op": op, **fields}) + "\n"



def preload() -> list[str]:
    """Import what every run needs; the handlers that failed to import."""
    import importlib

    from prefect.utilities.importtools import import_object

    from bgtasks.prefect_seam import WARM_MODULES, share_verify_contexts, single_flight_csrf, trust_checked_server_version

    single_flight_csrf()  # every run forked from here inherits these three
    share_verify_contexts()
    trust_checked_server_version()
    for module in WARM_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # moved in another Prefect version: only slower
            pass

    from flows import CONTROL_FLOWS, DEVICE_ENTRYPOINT, available_handlers

    failed = []
    for name, entrypoint in (available_handlers() | CONTROL_FLOWS | {"device-task": DEVICE_ENTRYPOINT}).items():
        try:
            import_object(entrypoint)
        except Exception as exc:  # a broken handler must not stop the others
            failed.append(f"{name}: {exc}")
    return failed


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_child(flow_run_id: str, env: dict[str, str], flow_run_json: str | None = None,
              related: dict[str, str] | None = None) -> None:
    """In the forked child: run the flow run as ``prefect.engine`` would, then ``os._exit``."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # prints go to the worker's log, never into the zygote's pipe
        child_env(env, flow_run_id)
        prefill_related(related or {})
        code = _run_engine(flow_run_id, flow_run_json)
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            threading._shutdown()  # type: ignore[attr-defined]  # let log/event shipping flush
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_engine(flow_run_id: str, flow_run_json: str | None) -> int:
    _observe_suspension_in_background()
    try:
        run_engine(flow_run_id, flow_run_json)
    except SystemExit as exc:
        return _exit_code(exc)
    return 0


def _observe_suspension_in_background() -> None:
    """Start Prefect's suspension observer without waiting for it to connect.

    For deployment runs the engine subscribes to the event stream before the
    flow starts and waits until the subscription is ready: about 200 ms of a
    warm run's 400 ms (profiled with cProfile in a child). The observer also
    polls (every 10 s), so a suspension requested during that window is still
    seen; the run just does not wait for the socket. Applied in the child only.
    """
    import contextlib
    import contextvars

    import prefect.flow_engine as engine

    original = engine.observe_flow_run_suspension

    @contextlib.contextmanager
    def observe(flow_run_id: Any, request: Any, polling_interval: float = 10) -> Any:
        cm = original(flow_run_id, request, polling_interval)
        entered = threading.Event()

        def enter() -> None:
            try:
                cm.__enter__()
            finally:
                entered.set()

        ctx = contextvars.copy_context()  # the run's settings context, as the original does
        threading.Thread(target=ctx.run, args=(enter,), daemon=True).start()
        try:
            yield
        finally:
            entered.wait(timeout=5)
            cm.__exit__(None, None, None)

    engine.observe_flow_run_suspension = observe  # type: ignore[assignment]


class Zygote:
    """The request loop (single-threaded: selectors over stdin and a SIGCHLD self-pipe)."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        self.buffer = b""

    def send(self, op: str, **fields: Any) -> None:
        self.out.write(message(op, **fields))
        self.out.flush()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send(EXITED, pid=pid, code=os.waitstatus_to_exitcode(status))

    def handle(self, line: bytes, wake_r: int, wake_w: int) -> None:
        req = json.loads(line)
        if req.get("op") != RUN:
            return
        pid = os.fork()
        if pid == 0:
            os.close(wake_r)
            os.close(wake_w)
            os.close(self.out.fileno())
            run_child(req["flow_run_id"], req.get("env") or {}, req.get("flow_run"), req.get("related"))
        self.send(SPAWNED, req=req["req"], pid=pid)

    def serve(self) -> None:
        if threading.active_count() != 1:
            raise RuntimeError(f"zygote must not run threads before forking ({threading.enumerate()})")
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
        sel = selectors.DefaultSelector()
        sel.register(0, selectors.EVENT_READ, "requests")
        sel.register(wake_r, selectors.EVENT_READ, "signals")
        self.send(READY)
        while True:
            for key, _ in sel.select():
                if key.data == "signals":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                    continue
                chunk = os.read(0, 65536)
                if not chunk:  # the worker is gone: children finish on their own
                    self.reap()
                    return
                self.buffer += chunk
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    if line.strip():
                        self.handle(line, wake_r, wake_w)
            self.reap()


def main() -> None:
    failed = preload()
    for problem in failed:
        print(f"bgtasks zygote: handler not preloaded: {problem}", file=sys.stderr)
    Zygote().serve()


if __name__ == "__main__":
    main()
