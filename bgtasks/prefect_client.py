"""One repair to Prefect's HTTP client, applied by every bgtasks process that talks to it.

bgtasks turns the Prefect server's CSRF protection on (docs/security.md). Prefect's async
client then fetches a CSRF token before its first change request, and every fetch replaces
that client's previous token on the server. Requests sent together on a fresh client (the
manager reads a task's runs with ``asyncio.gather``) each fetched a token, so all but the
last were refused; the refused ones then fetched again in step with each other and could
use up the client's retries (a task view failed with 403 "Invalid CSRF token", or waited
a minute). :func:`single_flight_csrf` makes a client fetch one token at a time, and a
request refused with a token that another request has already replaced takes the new one
instead of fetching again.
"""

from __future__ import annotations

import asyncio
from typing import Any

_PATCHED = "_bgtasks_single_flight_csrf"


def single_flight_csrf() -> None:
    """Patch ``PrefectHttpxAsyncClient._add_csrf_headers`` (idempotent)."""
    from prefect.client.base import PrefectHttpxAsyncClient

    original = PrefectHttpxAsyncClient._add_csrf_headers
    if getattr(original, _PATCHED, False):
        return

    async def _add_csrf_headers(self: Any, request: Any) -> None:
        state = self.__dict__.setdefault(_PATCHED, {"lock": asyncio.Lock(), "current": None})
        sent = request.headers.get("Prefect-Csrf-Token")
        async with state["lock"]:
            if self.csrf_token is None and sent is not None and state["current"] not in (None, sent):
                # Refused because another request replaced the token it carried: the
                # replacement is valid, fetching a third one would refuse that request.
                self.csrf_token = state["current"]
            await original(self, request)
            state["current"] = self.csrf_token

    setattr(_add_csrf_headers, _PATCHED, True)
    PrefectHttpxAsyncClient._add_csrf_headers = _add_csrf_headers  # type: ignore[method-assign]
