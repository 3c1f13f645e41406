"""``bgtasks token create|ls|revoke``: bearer tokens for the REST API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import cyclopts
from cyclopts import Parameter
from rich.table import Table

from bgtasks.cli import _common as cli
from bgtasks.cli._common import Output
from bgtasks.cli._store import with_store

token_app = cyclopts.App(name="token", help="Bearer tokens for the REST API (stored hashed; shown once).")
T = TypeVar("T")


def _with_tokens(op: Callable[[Any], Awaitable[T]]) -> T:
    from bgtasks.auth import TokenStore

    return with_store(lambda store: op(TokenStore(store)))


@token_app.command
def create(
    name: str,
    *,
    scope: Annotated[list[str] | None, Parameter(
        name=["--scope", "-s"],
        help="tasks:read, tasks:write, devices:write, devices:report (repeat or comma-separate); "
             "default tasks:read,tasks:write.")] = None,
    device: Annotated[str | None, Parameter(help="Bind the token to one device (devices:report only).")] = None,
    output: Output = "table",
) -> None:
    """Create a token and print its secret, once; only its hash is kept."""
    from bgtasks.auth import parse_scopes

    try:
        scopes = parse_scopes(scope or (["devices:report"] if device else ["tasks:read", "tasks:write"]))
    except ValueError as exc:
        cli.fail(f"Invalid --scope: {exc}")
    try:
        record, secret = _with_tokens(lambda t: t.create(name, scopes, device))
    except ValueError as exc:
        cli.fail(f"Invalid {exc}")
    if output == "json":
        cli.print_json(record.to_json_dict() | {"token": secret})
        return
    cli.console.print(f"Token {record.id} ({cli.shown(record.name)}), scopes {' '.join(sorted(record.scopes))}:")
    print(secret)
    cli.console.print("[dim]Shown only now: store it where your app keeps secrets. "
                      "Send it as `Authorization: Bearer <token>`.[/]")


@token_app.command(name="ls")
def list_tokens(*, output: Output = "table") -> None:
    """List tokens (never their secrets)."""
    tokens = _with_tokens(lambda t: t.list())
    if output == "json":
        cli.print_json([t.to_json_dict() for t in tokens])
        return
    table = Table("NAME", "SCOPES", "DEVICE", "CREATED", "LAST USED", "REVOKED")
    table.columns.insert(0, Table("ID").columns[0])
    table.columns[0].no_wrap = True
    for t in tokens:
        table.add_row(t.id, cli.shown(t.name), " ".join(sorted(t.scopes)), cli.shown(t.device_id or "-"), cli.when(t.created_at),
                      cli.when(t.last_used_at), cli.when(t.revoked_at))
    cli.console.print(table)


@token_app.command
def revoke(token_id: str) -> None:
    """Revoke a token by id: requests with it get 401 from now on."""
    try:
        record = _with_tokens(lambda t: t.revoke(token_id))
    except KeyError:
        cli.fail(f"No token with id {token_id!r} (see `bgtasks token ls`)")
    cli.console.print(f"Token {record.id} ({cli.shown(record.name)}) revoked.")
