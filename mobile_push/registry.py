"""The device registry: which phones bgtasks can wake, and whether their tokens still work.

A device is registered with its platform (android / ios), transport (fcm / apns),
push token, app id or bundle topic and labels. Tokens are checked for shape on
the way in:

- FCM registration token: 100 to 4096 characters of ``[A-Za-z0-9_:-]`` (what FCM
  issues today is ~160 characters, ``<instance>:<token>``);
- Firebase installation id (FID): 22 characters, base64url, first one ``c``-``f``;
- APNs device token: hexadecimal, an even number of 64 to 200 digits (Apple says
  the length may grow), stored lower-case; spaces and ``<>`` are dropped.

Android devices use FCM; iOS devices use APNs directly (with a bundle id topic)
or FCM. A device whose token a push service rejects is marked ``invalid`` with
the reason and time, and skipped by later runs until its token is updated.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from bgtasks.errors import FieldProblem
from bgtasks.store import Store
from bgtasks.store.schema import api_tokens, devices
from mobile_push.types import Platform, PushTarget, Transport

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_LABEL = re.compile(r"^[A-Za-z0-9._:/=-]{1,64}$")
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{100,4096}$")
_FID = re.compile(r"^[c-f][A-Za-z0-9_-]{21}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_BUNDLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,254}$")


class DeviceError(Exception):
    """Base of the registry's refusals."""


class DeviceNotFound(DeviceError):
    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        super().__init__(f"no device with id {device_id!r} (list them with `bgtasks device ls`)")


class DeviceConflict(DeviceError):
    """The id or the push token is already registered: ``field`` says which."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def normalize_token(transport: Transport, token: str) -> str:
    """The token in its stored form, or a ValueError saying what is wrong with it."""
    token = token.strip()
    if transport == Transport.APNS:
        token = re.sub(r"[\s<>]", "", token).lower()
        if not _HEX.match(token):
            raise ValueError("an APNs device token is hexadecimal (0-9, a-f)")
        if len(token) % 2 or not 64 <= len(token) <= 200:
            raise ValueError(f"an APNs device token has an even number of 64 to 200 hex digits, not {len(token)}")
        return token
    if _FID.match(token) or _FCM_TOKEN.match(token):
        return token
    raise ValueError(
        "not an FCM registration token (100+ characters of A-Z a-z 0-9 _ : -) "
        "nor a Firebase installation id (22 characters)"
    )


class _Json(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              field_title_generator=lambda name, info: name.replace("_", " ").capitalize())


class DeviceIn(_Json):
    """A device to register (``POST /devices``, ``bgtasks device add``)."""

    id: str | None = Field(None, description="Your id for the device; generated when left out.")
    platform: Platform
    transport: Transport | None = Field(None, description="fcm or apns; default fcm for android, apns for ios.")
    token: str = Field(min_length=1, max_length=4096, description="FCM registration token / FID, or APNs hex token.")
    topic: str | None = Field(None, max_length=255,
                              description="APNs: the app's bundle id (apns-topic). FCM: the app id, informational.")
    labels: list[str] = Field(default_factory=list, max_length=50)
    environment: Literal["production", "sandbox"] | None = Field(
        None, description="APNs: the environment the app's build registered with (sandbox for development "
        "builds); default BGTASKS_PUSH_APNS_ENVIRONMENT. A token refused there is tried on the other once.")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not _ID.match(v):
            raise ValueError("1 to 100 characters of A-Z a-z 0-9 . _ : -")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        for label in v:
            if not _LABEL.match(label):
                raise ValueError(f"{label!r}: a label is 1 to 64 characters of A-Z a-z 0-9 . _ : / = -")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> DeviceIn:
        transport = self.transport or (Transport.FCM if self.platform == Platform.ANDROID else Transport.APNS)
        if self.platform == Platform.ANDROID and transport == Transport.APNS:
            raise FieldProblem("transport", "Android devices are woken through FCM, not APNs")
        try:
            token = normalize_token(transport, self.token)
        except ValueError as exc:
            raise FieldProblem("token", str(exc)) from None
        if self.environment is not None and transport != Transport.APNS:
            raise FieldProblem("environment", "only devices pushed through APNs have an APNs environment")
        if transport == Transport.APNS:
            if not self.topic:
                raise FieldProblem("topic", "APNs needs the app's bundle id (e.g. com.example.app)")
            if not _BUNDLE.match(self.topic):
                raise FieldProblem("topic", "not a bundle id (letters, digits, dots and hyphens)")
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "token", token)
        return self


class DeviceUpdate(_Json):
    """A new push token (tokens rotate) and/or labels (``PUT /devices/{id}``)."""

    token: str | None = Field(None, min_length=1, max_length=4096)
    labels: list[str] | None = Field(None, max_length=50)

    _labels = field_validator("labels")(lambda cls, v: DeviceIn._labels(v) if v is not None else v)  # type: ignore[arg-type]


class Device(_Json):
    """A registered device, as the API shows it (the token is shown shortened)."""

    id: str
    platform: Platform
    transport: Transport
    token: str
    topic: str | None = None
    labels: list[str]
    environment: str | None = Field(None, description="APNs: production or sandbox (none: the default).")
    state: str = Field(description="active, or invalid (its token was rejected).")
    invalid_reason: str | None = None
    invalid_at: datetime | None = None
    created_at: datetime
    last_seen_at: datetime | None = None

    def target(self) -> PushTarget:
        return PushTarget(self.id, self.platform, self.transport, self.token, self.topic, self.environment)

    def public(self) -> dict[str, Any]:
        """JSON for clients: camelCase, the token shortened (it is a credential of sorts)."""
        out = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        out["token"] = f"{self.token[:6]}…{self.token[-4:]}"
        for key in ("createdAt", "invalidAt", "lastSeenAt"):
            if key in out:
                out[key] = out[key].replace("+00:00", "Z")
        return out


def _aware(v: datetime | None) -> datetime | None:
    return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v


def _device(row: Any) -> Device:
    return Device(
        id=row.id, platform=row.platform, transport=row.transport, token=row.token, topic=row.topic,
        labels=list(row.labels or []), environment=row.apns_environment, state=row.state, invalid_reason=row.invalid_reason,
        invalid_at=_aware(row.invalid_at), created_at=_aware(row.created_at), last_seen_at=_aware(row.last_seen_at),
    )


class DeviceRegistry:
    """Devices in bgtasks' database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, new: DeviceIn) -> Device:
        device_id = new.id or uuid.uuid4().hex[:16]
        now = datetime.now(UTC)
        async with self.store.session() as s:
            if (await s.execute(sa.select(devices.c.id).where(devices.c.id == device_id))).first():
                raise DeviceConflict("id", f"a device {device_id!r} is already registered")
            other = (await s.execute(sa.select(devices.c.id).where(
                devices.c.transport == new.transport, devices.c.token == new.token))).first()
            if other:
                raise DeviceConflict("token", f"already registered as device {other.id!r}")
            await s.execute(devices.insert().values(
                id=device_id, platform=new.platform.value, transport=new.transport.value,  # type: ignore[union-attr]
                token=new.token, topic=new.topic, labels=new.labels, apns_environment=new.environment,
                state="active", created_at=now,
            ))
        return await self.get(device_id)

    async def get(self, device_id: str) -> Device:
        async with self.store.session() as s:
            row = (await s.execute(sa.select(devices).where(devices.c.id == device_id))).first()
        if row is None:
            raise DeviceNotFound(device_id)
        return _device(row)

    async def list(self, platform: Platform | None = None, label: str | None = None,
                   state: str | None = None) -> list[Device]:
        q = sa.select(devices).order_by(devices.c.created_at, devices.c.id)
        if platform is not None:
            q = q.where(devices.c.platform == platform.value)
        if state is not None:
            q = q.where(devices.c.state == state)
        async with self.store.session() as s:
            rows = (await s.execute(q)).all()
        found = [_device(r) for r in rows]
        return [d for d in found if label is None or label in d.labels]

    async def remove(self, device_id: str) -> None:
        """Remove the device and revoke the API tokens bound to it, in one transaction."""
        async with self.store.session() as s:
            result = await s.execute(devices.delete().where(devices.c.id == device_id))
            if result.rowcount == 0:
                raise DeviceNotFound(device_id)
            await s.execute(api_tokens.update().where(
                api_tokens.c.device_id == device_id, api_tokens.c.revoked_at.is_(None),
            ).values(revoked_at=datetime.now(UTC)))

    async def update(self, device_id: str, change: DeviceUpdate) -> Device:
        """A new token makes the device active again (the app re-registered)."""
        current = await self.get(device_id)
        values: dict[str, Any] = {}
        if change.labels is not None:
            values["labels"] = change.labels
        if change.token is not None:
            try:
                values["token"] = normalize_token(current.transport, change.token)
            except ValueError as exc:
                raise FieldProblem("token", str(exc)) from None
            values.update(state="active", invalid_reason=None, invalid_at=None)
        if values:
            async with self.store.session() as s:
                if "token" in values:
                    other = (await s.execute(sa.select(devices.c.id).where(
                        devices.c.transport == current.transport.value, devices.c.token == values["token"],
                        devices.c.id != device_id))).first()
                    if other:
                        raise DeviceConflict("token", f"already registered as device {other.id!r}")
                await s.execute(devices.update().where(devices.c.id == device_id).values(**values))
        return await self.get(device_id)

    async def set_environment(self, device_id: str, environment: str) -> None:
        """The APNs environment that accepted the device's token (it was refused on the other)."""
        async with self.store.session() as s:
            await s.execute(devices.update().where(devices.c.id == device_id).values(apns_environment=environment))

    async def mark_invalid(self, device_id: str, reason: str) -> None:
        async with self.store.session() as s:
            await s.execute(devices.update().where(devices.c.id == device_id).values(
                state="invalid", invalid_reason=reason[:500], invalid_at=datetime.now(UTC)))

    async def touch(self, device_id: str) -> None:
        async with self.store.session() as s:
            await s.execute(devices.update().where(devices.c.id == device_id).values(last_seen_at=datetime.now(UTC)))

    async def resolve(self, device_ids: list[str] | None, labels: list[str] | None,
                      platform: str | None) -> tuple[list[Device], list[Device], list[str]]:
        """The devices a target names: (active, invalid, unknown ids). Every given
        criterion must hold (ids AND labels AND platform)."""
        all_devices = await self.list()
        chosen = all_devices
        unknown: list[str] = []
        if device_ids is not None:
            by_id = {d.id: d for d in all_devices}
            unknown = [i for i in device_ids if i not in by_id]
            chosen = [by_id[i] for i in dict.fromkeys(device_ids) if i in by_id]
        if labels:
            chosen = [d for d in chosen if set(labels) <= set(d.labels)]
        if platform is not None:
            chosen = [d for d in chosen if d.platform.value == platform]
        return [d for d in chosen if d.state == "active"], [d for d in chosen if d.state != "active"], unknown
