"""The spec's data model (its TypeScript interfaces, in Python).

Python code uses snake_case; JSON in and out uses the spec's TypeScript names
through aliases (``scheduledFor``, ``initialBackoffMs``, ``type``...). Times are
timezone-aware and serialised as ISO-8601 UTC. Optional fields that are unset are
left out of the JSON, as the TypeScript ``field?`` would be.

Beyond the spec, because users of every peer ask for it: ``cron`` and
``timezone`` for periodic schedules, ``endTime`` honoured for both, ``timeoutMs``
(per attempt), ``handler`` (the flow that runs the task), a jitter factor and a
``retryOn`` condition on the retry policy.

Validation errors name the field (pydantic's ``loc``) and the reason. Checks that
depend on the clock ("a one-time start in the past") apply to new input only;
definitions read back from storage are validated with the context
``{"stored": True}`` so that a task created yesterday stays readable today.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from bgtasks.errors import FieldProblem
from bgtasks.text import refuse_unsafe

__all__ = [
    "BackgroundTask",
    "CreateTaskOptions",
    "RetryCondition",
    "RetryPolicy",
    "TaskConstraints",
    "TaskPriority",
    "TaskResult",
    "TaskRun",
    "TaskSchedule",
    "TaskStatus",
    "TaskTarget",
    "TaskTrigger",
    "WaitingRun",
    "TRIGGER_EVENTS",
    "TaskType",
    "ONE_TIME_GRACE",
    "MAX_RETRIES",
    "describe_errors",
    "errors_from",
    "field_errors",
]

#: A one-time task may start this far in the past (clock skew, slow clients).
ONE_TIME_GRACE = timedelta(seconds=60)
#: More retries than this is a configuration mistake, not a policy.
MAX_RETRIES = 100
#: Shortest periodic interval: Prefect schedules at second granularity.
MIN_INTERVAL_MS = 1000
#: Longest backoff or timeout we accept: a week.
MAX_DURATION_MS = 7 * 24 * 3600 * 1000


#: A one-line name or label: no control characters, no bidi overrides (see bgtasks.text).
SafeText = Annotated[str, AfterValidator(refuse_unsafe)]
#: Free text (descriptions): newlines and tabs allowed, other controls and bidi overrides not.
SafeMultiline = Annotated[str, AfterValidator(lambda v: refuse_unsafe(v, allow="\n\t"))]


class TaskType(StrEnum):
    ONE_TIME = "one-time"
    PERIODIC = "periodic"
    TRIGGERED = "triggered"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskPriority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """1 for high: the work-queue priority in Prefect (lower runs first)."""
        return {"high": 1, "normal": 2, "low": 3}[self.value]


class _SpecModel(BaseModel):
    """JSON with the spec's camelCase names, Python with snake_case; no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        # "Max retries", not pydantic's "Maxretries", in forms built from the schema.
        field_title_generator=lambda name, info: name.replace("_", " ").capitalize(),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The spec's JSON shape: camelCase names, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


NUL_MESSAGE = "must not contain NUL characters (U+0000): PostgreSQL cannot store them"


def nul_path(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where in ``value`` (JSON: dicts, lists, strings) a NUL character is, or None.

    PostgreSQL refuses U+0000 in text and JSONB, so input that carries one would be
    stored on SQLite and fail on PostgreSQL: it is refused everywhere, up front.
    """
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and "\x00" in k:
                return (*path, k)
            if (found := nul_path(v, (*path, k))) is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if (found := nul_path(v, (*path, i))) is not None:
                return found
    return None


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _is_stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


#: What a periodic task does with runs it missed (see TaskSchedule.catch_up).
CatchUp = Literal["skip", "run-once", "run-all"]


class TaskSchedule(_SpecModel):
    """When a task runs. The interval is in milliseconds, as in the spec."""

    type: TaskType = Field(description="one-time, periodic, or triggered (with a trigger).")
    start_time: AwareDatetime | None = Field(
        None, description="First run (one-time: the run; periodic: the anchor). Default: now."
    )
    interval: int | None = Field(
        None,
        validation_alias=AliasChoices("interval", "intervalMs", "interval_ms"),
        description="Milliseconds between runs of a periodic task.",
    )
    end_time: AwareDatetime | None = Field(None, description="No run starts after this time.")
    cron: str | None = Field(None, description="Cron expression of a periodic task (beyond the spec).")
    timezone: str | None = Field(
        None, description="IANA time zone the cron expression is read in (default UTC)."
    )
    catch_up: CatchUp | None = Field(
        None,
        description="Periodic tasks: what happens to runs missed while bgtasks was down or that "
        "start later than the misfire grace (BGTASKS_WORKER_MISFIRE_GRACE_S): `skip` (default) drops "
        "them, `run-once` runs the latest one, `run-all` runs every one, oldest first.",
    )

    @field_validator("start_time", "end_time")
    @classmethod
    def _to_utc(cls, v: datetime | None) -> datetime | None:
        return _utc(v)

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, v: int | None) -> int | None:
        if v is None:
            return v
        if v <= 0:
            raise ValueError("must be a positive number of milliseconds")
        if v < MIN_INTERVAL_MS:
            raise ValueError(f"must be at least {MIN_INTERVAL_MS} ms")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as 'Europe/Paris')")
        return v

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # Prefect's own check, so what we accept is what its scheduler runs.
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=v)
        except ValueError:
            raise ValueError(f"invalid cron expression {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> TaskSchedule:
        if self.type == TaskType.TRIGGERED:
            if self.interval is not None or self.cron is not None or self.timezone is not None:
                raise FieldProblem("interval/cron", "a triggered task runs when its trigger fires; remove them")
            if self.start_time is not None or self.end_time is not None:
                if self.end_time is not None and self.start_time is not None and self.end_time <= self.start_time:
                    raise FieldProblem("endTime", "must be after startTime")
        if self.type == TaskType.ONE_TIME:
            if self.interval is not None or self.cron is not None:
                raise FieldProblem("interval/cron", "only periodic tasks repeat; remove them or use type 'periodic'")
            if self.end_time is not None:
                raise FieldProblem("endTime", "a one-time task has no end; remove endTime")
            if (
                self.start_time is not None
                and not _is_stored(info)
                and self.start_time < datetime.now(UTC) - ONE_TIME_GRACE
            ):
                raise FieldProblem(
                    "startTime", f"{self.start_time.isoformat()} is in the past; leave it out to run now")
        if self.type == TaskType.PERIODIC:
            if self.interval is None and self.cron is None:
                raise FieldProblem("interval", "a periodic task needs an interval (ms) or a cron expression")
            if self.interval is not None and self.cron is not None:
                raise FieldProblem("cron", "give either interval or cron, not both")
            if self.interval is not None and self.end_time is not None and self.interval % 1000:
                raise FieldProblem("interval", "with an endTime the interval must be whole seconds")
        if self.timezone is not None and self.cron is None:
            raise FieldProblem("timezone", "only cron schedules are read in a time zone")
        if self.catch_up is not None and self.type != TaskType.PERIODIC:
            raise FieldProblem("catchUp", "only periodic tasks miss runs; a one-time task runs once when it can")
        if self.end_time is not None:
            if self.start_time is not None and self.end_time <= self.start_time:
                raise FieldProblem("endTime", "must be after startTime")
            if not _is_stored(info) and self.end_time <= datetime.now(UTC):
                raise FieldProblem("endTime", "is in the past")
        return self


NetworkType = Literal["not-required", "connected", "unmetered", "not-roaming", "metered", "wifi", "cellular"]


class TaskConstraints(_SpecModel):
    """Conditions the host must meet before a run starts, with Android WorkManager's meaning.

    ``requiresNetwork`` = a default route on a running link (``networkType``
    ``connected``); ``requiresWifi`` = the default route goes over wifi (the spec's
    desktop meaning; WorkManager's nearest is ``unmetered``). ``networkType`` takes
    WorkManager's values (``not-roaming`` counts as ``connected``: a desktop cannot
    tell roaming) plus ``wifi`` and ``cellular``. Battery not low, charging,
    device idle and storage not low follow Android's thresholds (see the trigger
    daemon). A run whose constraints fail waits, without using a retry.
    """

    requires_network: bool | None = None
    requires_wifi: bool | None = None
    requires_charging: bool | None = None
    requires_battery_not_low: bool | None = None
    requires_device_idle: bool | None = None
    requires_storage_not_low: bool | None = None
    network_type: NetworkType | None = Field(None, description="WorkManager's NetworkType (beyond the spec).")
    stop_when_constraints_lost: bool | None = Field(
        None, description="Stop a running run whose constraints stop holding; it waits again, no retry used "
        "(default true).")
    constraint_deadline: int | None = Field(
        None, ge=0, le=MAX_DURATION_MS,
        description="Milliseconds after a run was due: if its constraints still fail then, apply onDeadline.")
    on_deadline: Literal["run", "fail"] | None = Field(
        None, description="At the deadline: run anyway (the result says so; the default) or fail the run.")

    @model_validator(mode="after")
    def _not_contradictory(self) -> TaskConstraints:
        nt = self.network_type
        if self.requires_wifi and nt in ("metered", "cellular"):
            raise FieldProblem("networkType", f"{nt!r} contradicts requiresWifi (wifi is never {nt})")
        if self.requires_network is False and (self.requires_wifi or nt not in (None, "not-required")):
            raise FieldProblem("requiresNetwork", "false, but requiresWifi/networkType ask for a network")
        return self

    def network_need(self) -> str | None:
        """The network the run needs: None, or one of connected, unmetered, metered, wifi, cellular."""
        if self.requires_wifi:
            return "wifi"
        if self.network_type in ("unmetered", "metered", "wifi", "cellular"):
            return self.network_type
        if self.requires_network or self.network_type in ("connected", "not-roaming"):
            return "connected"
        return None

    @property
    def stops_when_lost(self) -> bool:
        return self.stop_when_constraints_lost is not False

    @property
    def fails_at_deadline(self) -> bool:
        return self.on_deadline == "fail"

    def any(self) -> bool:
        """Whether anything is required."""
        return bool(self.network_need() or self.requires_charging or self.requires_battery_not_low
                    or self.requires_device_idle or self.requires_storage_not_low)


def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2, whose matching time is linear in the text: a pattern sent
    by a client cannot stall a worker with catastrophic backtracking. RE2 has no
    backreferences or lookaround; a ValueError says what it refused."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the pattern is user input: not into our stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        raise ValueError(reason.decode() if isinstance(reason, bytes) else str(reason)) from None


class RetryCondition(_SpecModel):
    """Which failures are retried (beyond the spec). Absent: every failure is.

    A failure is retried when its exception type (or any base class) is named in
    ``exceptions`` or its message matches ``messagePattern`` (a regular
    expression in RE2's syntax, searched anywhere in the message: no backreferences
    or lookaround, and matching time linear in the message).
    """

    exceptions: list[str] = Field(default_factory=list, max_length=50)
    message_pattern: str | None = Field(None, max_length=500)

    @field_validator("exceptions")
    @classmethod
    def _identifiers(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
                raise ValueError(f"{name!r} is not an exception type name")
        return v

    @field_validator("message_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compile_pattern(v)
            except ValueError as exc:
                raise ValueError(f"not a regular expression RE2 accepts: {exc}") from None
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> RetryCondition:
        if not self.exceptions and self.message_pattern is None:
            raise FieldProblem("retryOn", "name exceptions or a messagePattern (or leave retryOn out)")
        return self


class RetryPolicy(_SpecModel):
    """Capped exponential backoff: delay n = min(initial * multiplier**n, max), less jitter."""

    max_retries: int = Field(ge=0, le=MAX_RETRIES, description="Retries after the first attempt.")
    backoff_multiplier: float = Field(2.0, ge=1.0, le=100.0)
    initial_backoff_ms: int = Field(1000, ge=0, le=MAX_DURATION_MS)
    max_backoff_ms: int = Field(60000, ge=0, le=MAX_DURATION_MS)
    jitter: float = Field(
        0.1, ge=0.0, le=1.0, description="Each delay is shortened by up to this fraction, at random."
    )
    retry_on: RetryCondition | None = None

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> RetryPolicy:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise FieldProblem(
                "maxBackoffMs", f"{self.max_backoff_ms} is below initialBackoffMs ({self.initial_backoff_ms})")
        return self


#: Events a trigger can wait for (``bgtasks.<on>`` as Prefect events, emitted by the trigger daemon).
TRIGGER_EVENTS = (
    "file.created", "file.modified", "file.deleted", "file.moved", "file.arrived",
    "network.connected", "network.disconnected", "network.type-changed", "network.metered-changed",
    "power.plugged", "power.unplugged", "power.battery-low", "power.battery-ok",
    "device.idle", "device.active",
    "storage.low", "storage.ok",
)


class TaskTrigger(_SpecModel):
    """What starts a triggered task (beyond the spec's one-line "triggered" type).

    ``{"on": "file.created", "path": "/data/inbox", "pattern": "*.csv"}``,
    ``{"on": "network.connected", "networkType": "unmetered"}``, ``{"on": "power.plugged"}``.
    File triggers watch ``path`` (absolute, an existing directory inside the daemon's
    allowed roots: checked when the task is created); ``debounceMs`` coalesces a burst
    into one run (the event lists the paths).
    """

    on: Literal[TRIGGER_EVENTS] = Field(description="The event: file.*, network.*, power.*, device.*, storage.*")  # type: ignore[valid-type]
    path: SafeText | None = Field(None, max_length=4096, description="file.*: the directory to watch (absolute).")
    pattern: SafeText | None = Field(None, max_length=200, description="file.*: glob of file names, e.g. *.csv.")
    recursive: bool = Field(False, description="file.*: also watch subdirectories.")
    debounce_ms: int = Field(1000, ge=0, le=3_600_000, description="file.*: wait for quiet this long, then run "
                             "once for the burst.")
    network_type: Literal["any", "unmetered", "metered", "wifi", "ethernet", "cellular"] = Field(
        "any", description="network.connected / type-changed: only on this kind of network.")
    run_on: Literal["any", "eventHost"] = Field(
        "any", description="Where the run goes with several hosts: `any` worker of the pool, or `eventHost`: a "
        "worker of the host whose trigger daemon saw the event (its files, its network); it waits while that "
        "host is down.")

    @model_validator(mode="after")
    def _fits(self) -> TaskTrigger:
        is_file = self.on.startswith("file.")
        if is_file:
            if not self.path:
                raise FieldProblem("path", "file triggers need the directory to watch")
            if not self.path.startswith("/"):
                raise FieldProblem("path", f"{self.path!r} is relative; give an absolute path")
        elif self.path is not None or self.pattern is not None:
            raise FieldProblem("path", f"only file triggers watch a path, not {self.on}")
        if self.network_type != "any" and self.on not in ("network.connected", "network.type-changed"):
            raise FieldProblem("networkType", f"applies to network.connected and network.type-changed, not {self.on}")
        return self


class TaskTarget(_SpecModel):
    """The devices a task wakes with a silent push instead of running on this host
    (beyond the spec; ``mobile_push``). Every given criterion must hold."""

    device_ids: list[SafeText] | None = Field(None, min_length=1, max_length=10000,
                                              description="Registered device ids.")
    labels: list[SafeText] | None = Field(None, min_length=1, max_length=50,
                                          description="Devices carrying all these labels.")
    platform: Literal["android", "ios"] | None = Field(None, description="Only this platform.")
    high_priority: bool = Field(False, description="FCM android priority high (deprioritised by FCM when "
                                "no notification is shown: use it only for urgent work).")
    collapse_key: SafeText | None = Field(None, max_length=64, description="Newer pushes replace queued older "
                                          "ones; at most 64 bytes in UTF-8 (APNs' apns-collapse-id, on both paths). "
                                          "FCM keeps at most four collapse keys per device: a fifth is refused.")
    pushes_per_hour: int | None = Field(None, ge=0, le=3600, description="The push budget of each target device "
                                        "for this task's pushes: held beyond it, sent when the trailing hour allows "
                                        "(default BGTASKS_PUSH_BUDGET_IOS_PER_HOUR / _ANDROID_PER_HOUR; 0: none).")
    analytics_label: str | None = Field(None, pattern=r"^[A-Za-z0-9\-_.~%]{1,50}$", description="FCM's "
                                        "fcmOptions.analyticsLabel, so Firebase's delivery reports split by task "
                                        "(default: the task's name, its other characters as '-').")

    @model_validator(mode="after")
    def _says_something(self) -> TaskTarget:
        if self.device_ids is None and self.labels is None and self.platform is None:
            raise FieldProblem("deviceIds", "name deviceIds, labels or a platform")
        if self.collapse_key is not None and len(self.collapse_key.encode()) > 64:
            # iOS devices get it as apns-collapse-id, directly or through FCM: 64 bytes.
            raise FieldProblem("collapseKey", f"{len(self.collapse_key.encode())} bytes in UTF-8; at most 64")
        return self


_NAME_FORBIDDEN = set("/%&<>")


class CreateTaskOptions(_SpecModel):
    """What a client sends to create a task (the spec's shape, plus the extras above)."""

    name: SafeText = Field(min_length=1, max_length=100)
    description: SafeMultiline | None = Field(None, max_length=2000)
    schedule: TaskSchedule
    priority: TaskPriority = TaskPriority.NORMAL
    constraints: TaskConstraints = Field(default_factory=TaskConstraints)
    retry_policy: RetryPolicy | None = None
    data: Any = None
    timeout_ms: int | None = Field(None, gt=0, le=MAX_DURATION_MS, description="Per attempt.")
    handler: SafeText | None = Field(
        None, min_length=1, max_length=100, description="Registered handler (flow) to run."
    )
    target: TaskTarget | None = Field(
        None, description="Wake these devices with a silent push; they run the work and report back."
    )
    trigger: TaskTrigger | None = Field(None, description="What starts a triggered task.")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, raw: Any) -> Any:
        if (where := nul_path(raw)) is not None:
            raise FieldProblem(".".join(map(str, where)) or "input", NUL_MESSAGE)
        return raw

    @model_validator(mode="after")
    def _trigger_matches_type(self) -> CreateTaskOptions:
        triggered = self.schedule.type == TaskType.TRIGGERED
        if triggered and self.trigger is None:
            raise FieldProblem("trigger", "a triggered task needs a trigger, e.g. {\"on\": \"power.plugged\"}")
        if self.trigger is not None and not triggered:
            raise FieldProblem("trigger", "only tasks of schedule type 'triggered' have a trigger")
        return self

    @field_validator("name")
    @classmethod
    def _clean_name(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be blank")
        bad = sorted(_NAME_FORBIDDEN & set(v))
        if bad:
            raise ValueError(f"must not contain {' '.join(bad)}")
        return v


class TaskResult(_SpecModel):
    """The outcome of one run. ``duration`` is in milliseconds, as in the spec."""

    success: bool
    data: Any = None
    error: str | None = None
    executed_at: AwareDatetime
    duration: int = Field(ge=0)
    # Beyond the spec: which run, its Prefect state, how many attempts it took.
    run_id: str | None = None
    state: str | None = None
    attempts: int | None = None
    constraints_met: bool | None = Field(
        None, description="False when the run started at its constraint deadline with constraints unmet.")

    @field_validator("executed_at")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime | None:
        return _utc(v)


class WaitingRun(_SpecModel):
    """A run that waits for its constraints (beyond the spec): why, and since when."""

    run_id: str
    since: AwareDatetime
    reason: str = Field(description="The failing constraints and what was observed.")

    @field_validator("since")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime | None:
        return _utc(v)


class BackgroundTask(_SpecModel):
    """A task as clients see it; the live fields are derived from Prefect."""

    id: str
    name: str
    description: str | None = None
    type: TaskType
    status: TaskStatus
    priority: TaskPriority
    created_at: AwareDatetime
    scheduled_for: AwareDatetime | None = None
    last_run: AwareDatetime | None = None
    next_run: AwareDatetime | None = None
    result: TaskResult | None = None
    # Beyond the spec: the definition, so `show` and the UI can explain the task.
    handler: str | None = None
    paused: bool = False
    schedule: TaskSchedule | None = None
    constraints: TaskConstraints | None = None
    retry_policy: RetryPolicy | None = None
    timeout_ms: int | None = None
    target: TaskTarget | None = None
    trigger: TaskTrigger | None = None
    waiting: list[WaitingRun] | None = Field(None, description="Runs waiting for their constraints.")
    data: Any = None
    warnings: list[str] | None = Field(None, description="Only in the answer to a creation: what will not go as "
                                       "the definition may suggest (a schedule beyond the devices' push budget).")

    @field_validator("created_at", "scheduled_for", "last_run", "next_run")
    @classmethod
    def _to_utc(cls, v: datetime | None) -> datetime | None:
        return _utc(v)


def field_errors(exc: Exception) -> list[dict[str, str]]:
    """Flatten a pydantic ``ValidationError`` into ``[{"field", "message"}]``.

    Field names use the JSON (camelCase) path. Cross-field checks raise a
    :class:`bgtasks.errors.FieldProblem` from a model validator, whose location is the
    model; its field is appended to the path here, so every error names its field.
    """
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return [{"field": "", "message": str(exc)}]
    return errors_from(exc.errors())


def errors_from(errors: Any, skip: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """:func:`field_errors` for pydantic's error dicts (as FastAPI hands them over);
    location parts in ``skip`` (``"body"``) are dropped."""
    out = []
    for err in errors:
        loc = [to_camel(p) if isinstance(p, str) else str(p) for p in err["loc"] if p not in skip]
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):  # a check across fields names its field as data
            loc.append(problem.field)
            msg = problem.reason
        else:
            msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append({"field": ".".join(loc), "message": msg})
    return out


def describe_errors(exc: Exception) -> str:
    """One line per error: ``schedule.interval: must be a positive number of milliseconds``."""
    return "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in field_errors(exc))


class TaskRun(_SpecModel):
    """One run of a task, for its history (beyond the spec's interfaces)."""

    id: str
    status: TaskStatus
    state: str
    message: str | None = None
    scheduled_for: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    attempts: int | None = None
    result: TaskResult | None = None

    @field_validator("scheduled_for", "started_at", "ended_at")
    @classmethod
    def _to_utc(cls, v: datetime | None) -> datetime | None:
        return _utc(v)
