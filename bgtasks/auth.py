"""Bearer tokens for the REST API: created once, shown once, stored hashed.

A token is ``bgt_`` + 43 url-safe characters (256 random bits). Only its
SHA-256 is stored: a token is a high-entropy secret, not a password, so a slow
hash adds nothing and a plain digest lets the API find the row by index.

Scopes:

- ``tasks:read``: list, get, history, result;
- ``tasks:write``: create, run, pause, resume, cancel, delete;
- ``devices:write``: register and remove devices (``mobile_push``);
- ``devices:report``: a device reports the outcome of its runs. A token bound to a
  device (``--device``, which must be registered) may report only for that device and
  change only that device's push token; removing the device revokes it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from bgtasks.errors import FieldProblem
from bgtasks.store import Store
from bgtasks.store.schema import api_tokens, devices
from bgtasks.text import unsafe_char

PREFIX = "bgt_"
#: ``last_used_at`` is written at most this often per token (a write per request would
#: serialise every request on SQLite).
TOUCH_EVERY = timedelta(minutes=1)


#: The name of the token ``bgtasks ui --open`` mints for the task panel (one live at a time).
PANEL_TOKEN_NAME = "panel (bgtasks ui)"


class Scope(StrEnum):
    TASKS_READ = "tasks:read"
    TASKS_WRITE = "tasks:write"
    DEVICES_WRITE = "devices:write"
    DEVICES_REPORT = "devices:report"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class ApiToken:
    """A token's record; never its secret."""

    id: str
    name: str
    scopes: frozenset[Scope]
    device_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> ApiToken:
        return cls(
            id=row.id,
            name=row.name,
            scopes=frozenset(Scope(s) for s in row.scopes.split()),
            device_id=row.device_id,
            created_at=_aware(row.created_at),  # type: ignore[arg-type]
            last_used_at=_aware(row.last_used_at),
            revoked_at=_aware(row.revoked_at),
        )

    def to_json_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "createdAt": self.created_at.isoformat().replace("+00:00", "Z"),
        }
        if self.device_id:
            out["deviceId"] = self.device_id
        for key, value in (("lastUsedAt", self.last_used_at), ("revokedAt", self.revoked_at)):
            if value is not None:
                out[key] = value.isoformat().replace("+00:00", "Z")
        return out


def parse_scopes(values: list[str]) -> frozenset[Scope]:
    """Scope names to scopes; an unknown name is a ValueError naming it and the known ones."""
    out = set()
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                out.add(Scope(part))
            except ValueError:
                known = ", ".join(s.value for s in Scope)
                raise ValueError(f"unknown scope {part!r} (known: {known})") from None
    if not out:
        raise ValueError("give at least one scope")
    return frozenset(out)


class TokenStore:
    """Create, verify, list and revoke API tokens."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, name: str, scopes: frozenset[Scope], device_id: str | None = None) -> tuple[ApiToken, str]:
        """A new token: its record and its secret (the only time the secret exists)."""
        name = name.strip()
        if not name or len(name) > 100:
            raise FieldProblem("name", "must be 1 to 100 characters")
        if device_id is not None and scopes - {Scope.DEVICES_REPORT}:
            raise FieldProblem("device", "a device-bound token may carry only the devices:report scope")
        if (found := unsafe_char(name)) is not None:
            raise FieldProblem("name", f"must not contain control or bidi-override characters (found {found})")
        secret = PREFIX + secrets.token_urlsafe(32)
        row = {
            "id": uuid.uuid4().hex[:12],
            "name": name,
            "token_hash": hash_token(secret),
            "scopes": " ".join(sorted(scopes)),
            "device_id": device_id,
            "created_at": datetime.now(UTC),
        }
        async with self.store.session() as s:
            if device_id is not None and (await s.execute(
                    sa.select(devices.c.id).where(devices.c.id == device_id))).first() is None:
                raise FieldProblem("device", f"no device {device_id!r} is registered (`bgtasks device add` first)")
            await s.execute(api_tokens.insert().values(**row))
        return ApiToken.from_row(SimpleNamespace(**row, last_used_at=None, revoked_at=None)), secret

    async def verify(self, secret: str) -> ApiToken | None:
        """The live token with this secret, or None (unknown or revoked)."""
        if not secret.startswith(PREFIX):
            return None
        digest = hash_token(secret)
        async with self.store.session() as s:
            row = (await s.execute(sa.select(api_tokens).where(api_tokens.c.token_hash == digest))).first()
            if row is None or row.revoked_at is not None:
                return None
            token = ApiToken.from_row(row)
            now = datetime.now(UTC)
            if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
                await s.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(last_used_at=now))
        return token

    async def list(self) -> list[ApiToken]:
        async with self.store.session() as s:
            rows = (await s.execute(sa.select(api_tokens).order_by(api_tokens.c.created_at))).all()
        return [ApiToken.from_row(r) for r in rows]

    async def revoke(self, token_id: str) -> ApiToken:
        """Revoke by id; a KeyError when there is no such token."""
        async with self.store.session() as s:
            await s.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = (await s.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id))).first()
        if row is None:
            raise KeyError(token_id)
        return ApiToken.from_row(row)
