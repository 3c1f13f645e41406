"""Reading deployments back from Prefect, for every room that lists tasks."""

from __future__ import annotations

from typing import Any

#: Prefect's largest page of deployments.
PAGE = 200


async def read_all_deployments(client: Any, flt: Any) -> list[Any]:
    """Every deployment the filter matches, a page (the API's most, 200) at a time."""
    out: list[Any] = []
    while True:
        page = await client.read_deployments(deployment_filter=flt, limit=PAGE, offset=len(out))
        out.extend(page)
        if len(page) < PAGE:
            return out
