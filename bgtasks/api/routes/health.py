"""``GET /health``: the API and its Prefect server answer (no token needed)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from bgtasks.api import deps
from bgtasks.api.errors import ok, problem, problems

router = APIRouter()


class Health(BaseModel):
    status: Literal["ok"]


@router.get("/health", responses=ok(Health) | problems(503))
async def health(request: Request) -> Any:
    """Liveness of the API and its Prefect server; needs no token."""
    try:
        await deps.manager(request).client.api_healthcheck()
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return problem(503, "Unavailable", f"the Prefect API does not answer: {type(exc).__name__}")
    return {"status": "ok"}
