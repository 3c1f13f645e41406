"""Deploy the Prefect UI controls of :mod:`flows.controls` (idempotent: an upsert by name)."""

from __future__ import annotations

from typing import Any

from flows import dotted_entrypoint
from flows import CONTROL_FLOWS, CONTROL_TAG


async def ensure_control_deployments(client: Any, pool: str) -> dict[str, str]:
    """Create or update the control deployments in ``pool``'s ``high`` queue; name -> id."""
    from prefect.utilities.importtools import import_object

    out = {}
    for name, entrypoint in CONTROL_FLOWS.items():
        flow_obj = import_object(entrypoint)
        flow_id = await client.create_flow_from_name(flow_obj.name)
        dep_id = await client.create_deployment(
            flow_id=flow_id,
            name=name,
            entrypoint=dotted_entrypoint(entrypoint),
            work_pool_name=pool,
            work_queue_name="high",
            tags=[CONTROL_TAG],
            description=(flow_obj.description or "") + "\n\n*bgtasks control: run it with Run > Custom run.*",
            parameter_openapi_schema=flow_obj.parameters.model_dump(mode="json"),
            enforce_parameter_schema=True,
            paused=False,
        )
        out[name] = str(dep_id)
    return out
