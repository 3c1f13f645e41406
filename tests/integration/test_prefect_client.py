"""Prefect clients with the server's CSRF protection on: concurrent requests share a token.

Against the session's real server (CSRF on, as ``bgtasks up`` starts it). Every token the
client fetches replaces its previous one on the server, so the number of fetches is what
the repair in :mod:`bgtasks.prefect_seam` changes: without it, eight requests sent
together on a fresh client fetch eight tokens and seven are refused.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client

from bgtasks.prefect_seam import single_flight_csrf
from bgtasks.settings import Settings
from tests.fixtures import ServerHandle

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]


def counting_client() -> tuple[Any, list[str]]:
    fetched: list[str] = []

    async def hook(request: httpx.Request) -> None:
        if request.url.path.endswith("/csrf-token"):
            fetched.append(str(request.url))

    single_flight_csrf()
    return get_client(httpx_settings={"event_hooks": {"request": [hook]}}), fetched


async def test_requests_sent_together_on_a_fresh_client_fetch_one_token(prefect_server: ServerHandle) -> None:
    client, fetched = counting_client()
    async with client:
        pools = await asyncio.gather(*(client.read_work_pools() for _ in range(8)))
    assert len(pools) == 8
    assert len(fetched) == 1


async def test_a_request_refused_with_a_replaced_token_takes_the_replacement(
        prefect_server: ServerHandle, settings: Settings) -> None:
    """The server's token for this client is replaced behind its back (as a concurrent fetch
    would): both requests in flight are refused, and only one new token is fetched."""
    assert settings.server.auth_string is not None
    basic = base64.b64encode(settings.server.auth_string.get_secret_value().encode()).decode()
    client, fetched = counting_client()
    async with client:
        await client.read_work_pools()
        assert len(fetched) == 1
        client_id = client._client.csrf_client_id  # the id the client sends with its token
        replaced = httpx.get(f"{settings.api_url}/csrf-token", params={"client": str(client_id)},
                             headers={"Authorization": f"Basic {basic}"})
        assert replaced.status_code == 200, replaced.text
        pools = await asyncio.gather(*(client.read_work_pools() for _ in range(2)))
    assert len(pools) == 2
    assert len(fetched) == 2


async def test_the_trigger_daemons_client_fetches_one_token_for_concurrent_posts(
        prefect_server: ServerHandle, settings: Settings) -> None:
    """The daemon's own small client (its sender, rule and release loops post concurrently)."""
    from triggers.prefect_api import PrefectApi

    assert settings.server.auth_string is not None
    api = PrefectApi(settings.api_url, auth_string=settings.server.auth_string.get_secret_value())
    fetched: list[str] = []

    async def hook(request: httpx.Request) -> None:
        if request.url.path.endswith("/csrf-token"):
            fetched.append(str(request.url))

    api._http.event_hooks = {"request": [hook], "response": []}
    try:
        answers = await asyncio.gather(*(api.post("/work_pools/filter", {}) for _ in range(8)))
    finally:
        await api.aclose()
    assert [a.status_code for a in answers] == [200] * 8
    assert len(fetched) == 1
