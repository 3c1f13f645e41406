"""The API's OpenAPI document as it really answers: every error a Problem as
``application/problem+json`` (also 422, which FastAPI documents as its own shape), and links
from each creating operation to the ones that take the id it returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from bgtasks.api.errors import PROBLEM

#: What a created resource's answer gives the routes that take its id (OpenAPI links): from
#: (method, path, status) to {path parameter: runtime expression}.
LINK_SOURCES: dict[tuple[str, str, str], dict[str, str]] = {
    ("post", "/tasks", "201"): {"task_id": "$response.body#/id"},
    ("post", "/devices", "201"): {"device_id": "$response.body#/id"},
    ("post", "/tasks/{task_id}/run", "202"): {"run_id": "$response.body#/runId"},
}


def add_links(doc: dict[str, Any]) -> None:
    """OpenAPI links from each creating operation to every operation that takes the id it
    returns, so that clients and tools (Schemathesis' stateful runs) can chain them."""
    for (method, path, status), gives in LINK_SOURCES.items():
        response = doc["paths"][path][method]["responses"][status]
        links: dict[str, Any] = {}
        for target_path, operations in sorted(doc["paths"].items()):
            names = {p.strip("{}") for p in target_path.split("/") if p.startswith("{")}
            if not names & gives.keys():
                continue
            for target in operations.values():
                params = {n: gives[n] for n in sorted(names & gives.keys())}
                params.update({n: f"$request.path.{n}" for n in sorted(names - gives.keys())
                               if f"{{{n}}}" in path})
                links[target["operationId"]] = {"operationId": target["operationId"], "parameters": params}
        response["links"] = links


def install(app: FastAPI) -> None:
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = plain()
            for operations in doc["paths"].values():
                for op in operations.values():
                    for code, response in op.get("responses", {}).items():
                        if code.isdigit() and int(code) >= 400:
                            response["content"] = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for unused in ("HTTPValidationError", "ValidationError"):
                doc["components"]["schemas"].pop(unused, None)
            add_links(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
