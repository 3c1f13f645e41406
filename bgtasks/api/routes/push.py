"""``GET /push/stats`` and ``GET /metrics``: what the push transports did, counted from the deliveries.

The counts come from bgtasks' database (every run's deliveries, whichever
process pushed them), so they survive restarts and agree across API replicas.
Per transport: messages (one per run and device), sends (attempts), accepted,
retries, budget holds, and the final outcome and the service's reason of each
message. ``/metrics`` shows the same in Prometheus' text format, with the
devices per platform and state; both need a token with ``tasks:read``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from bgtasks.api import deps
from bgtasks.api.deps import READ
from bgtasks.api.errors import DENIED, ok

router = APIRouter()


class TransportStats(BaseModel):
    messages: int = Field(description="Pushes of a run to a device (a retried run's push counts once).")
    sends: int = Field(description="Send attempts, retries included.")
    accepted: int = Field(description="Messages the service accepted.")
    retries: int = Field(description="Attempts after a message's first.")
    holds: int = Field(description="Times a push was held back by its device's push budget.")
    outcomes: dict[str, int] = Field(description="Messages by final outcome: delivered, invalid-token, "
                                     "transient, config, held.")
    reasons: dict[str, int] = Field(description="Messages by the service's reason code (UNREGISTERED, "
                                    "BadDeviceToken, QUOTA_EXCEEDED...), and PushBudget for held ones.")


class PushStats(BaseModel):
    transports: dict[str, TransportStats]


async def push_stats(request: Request) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in await deps.ledger(request).stats():
        t = out.setdefault(row["transport"], {"messages": 0, "sends": 0, "accepted": 0, "retries": 0, "holds": 0,
                                              "outcomes": {}, "reasons": {}})
        t["messages"] += row["messages"]
        t["sends"] += row["attempts"]
        t["retries"] += row["retries"]
        t["holds"] += row["holds"]
        if row["outcome"] == "delivered":
            t["accepted"] += row["messages"]
        t["outcomes"][row["outcome"]] = t["outcomes"].get(row["outcome"], 0) + row["messages"]
        if row["reason"]:
            t["reasons"][row["reason"]] = t["reasons"].get(row["reason"], 0) + row["messages"]
    return out


@router.get("/push/stats", dependencies=READ, responses=ok(PushStats) | DENIED)
async def stats(request: Request) -> Any:
    """Per transport: messages, sends, accepted, retries, budget holds, outcomes and reasons."""
    return JSONResponse({"transports": await push_stats(request)})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, help_: str, samples: list[tuple[dict[str, str], int]]) -> list[str]:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{inner}}} {value}")
    return lines


@router.get("/metrics", dependencies=READ, response_class=PlainTextResponse, responses=DENIED)
async def metrics(request: Request) -> Any:
    """The push counts and the devices, in Prometheus' text format (scrape with a bearer token)."""
    per = await push_stats(request)
    lines: list[str] = []
    for key, help_ in (("messages", "Pushes of a run to a device, kept in the database."),
                       ("sends", "Send attempts to the push service, retries included."),
                       ("accepted", "Pushes the push service accepted."),
                       ("retries", "Send attempts after a push's first."),
                       ("holds", "Times a push was held back by its device's push budget.")):
        lines += _family(f"bgtasks_push_{key}", help_, [({"transport": t}, s[key]) for t, s in sorted(per.items())])
    lines += _family("bgtasks_push_outcomes", "Pushes by transport and final outcome.",
                     [({"transport": t, "outcome": o}, n) for t, s in sorted(per.items())
                      for o, n in sorted(s["outcomes"].items())])
    lines += _family("bgtasks_push_reasons", "Pushes by transport and the service's reason code.",
                     [({"transport": t, "reason": r}, n) for t, s in sorted(per.items())
                      for r, n in sorted(s["reasons"].items())])
    counts: dict[tuple[str, str], int] = {}
    for d in await deps.devices(request).list():
        counts[(d.platform.value, d.state)] = counts.get((d.platform.value, d.state), 0) + 1
    lines += _family("bgtasks_devices", "Registered devices by platform and state.",
                     [({"platform": p, "state": s}, n) for (p, s), n in sorted(counts.items())])
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")
