"""The Prefect UI's creation form (``create-background-task``): CreateTaskOptions as fields
that all have a value.

Prefect's parameter form shows an optional field (``X | None``) with a type switch whose
"None" reads "Property is type None". These models say the same things with plain
defaults instead: an empty text, 0, ``[]``, ``"any"`` or ``"none"`` means "not given", and
:meth:`CreateForm.options` turns them into the API's CreateTaskOptions (validated there, so
a bad value fails the run naming the field as the API would).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from bgtasks.models import (
    MAX_DURATION_MS,
    MAX_RETRIES,
    TRIGGER_EVENTS,
    CatchUp,
    CreateTaskOptions,
    NetworkType,
    TaskPriority,
    TaskType,
)


class ScheduleForm(BaseModel):
    type: TaskType = Field(TaskType.ONE_TIME, title="Type", description="one-time, periodic, or triggered (fill Trigger).")
    start_time: str = Field("", description="ISO 8601 with its offset, e.g. 2026-12-24T09:00:00+01:00. "
                            "Empty: now.")
    every_seconds: int = Field(0, ge=0, le=MAX_DURATION_MS // 1000,
                               description="Periodic: seconds between runs. 0: use the cron expression.")
    cron: str = Field("", description="Periodic: a cron expression instead, e.g. 0 7 * * 1-5.")
    timezone: str = Field("UTC", description="The IANA time zone the cron expression is read in.")
    end_time: str = Field("", description="ISO 8601: no run starts after it. Empty: no end.")
    catch_up: CatchUp = Field("skip", description="Periodic: runs missed while bgtasks was down.")

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.value}
        if self.start_time.strip():
            out["startTime"] = self.start_time.strip()
        if self.type == TaskType.PERIODIC:
            if self.every_seconds:
                out["interval"] = self.every_seconds * 1000
            if self.cron.strip():
                out["cron"] = self.cron.strip()
                out["timezone"] = self.timezone.strip() or "UTC"
            if self.end_time.strip():
                out["endTime"] = self.end_time.strip()
            if self.catch_up != "skip":
                out["catchUp"] = self.catch_up
        return out


class ConstraintsForm(BaseModel):
    requires_network: bool = False
    requires_wifi: bool = False
    requires_charging: bool = False
    requires_battery_not_low: bool = False
    requires_device_idle: bool = False
    requires_storage_not_low: bool = False
    network_type: NetworkType = Field("not-required", description="WorkManager's NetworkType.")
    stop_when_constraints_lost: bool = Field(True, description="Stop a running run whose constraints stop "
                                             "holding; it waits again, no retry used.")
    deadline_seconds: int = Field(0, ge=0, le=MAX_DURATION_MS // 1000,
                                  description="Seconds after a run was due: if its constraints still fail, "
                                  "apply On deadline. 0: wait for ever.")
    on_deadline: Literal["run", "fail"] = Field("run", description="At the deadline: run anyway, or fail.")

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: True for k in ("requiresNetwork", "requiresWifi", "requiresCharging",
                                                  "requiresBatteryNotLow", "requiresDeviceIdle",
                                                  "requiresStorageNotLow")
                               if getattr(self, _snake(k))}
        if self.network_type != "not-required":
            out["networkType"] = self.network_type
        if not self.stop_when_constraints_lost:
            out["stopWhenConstraintsLost"] = False
        if self.deadline_seconds:
            out["constraintDeadline"] = self.deadline_seconds * 1000
            out["onDeadline"] = self.on_deadline
        return out


class RetryForm(BaseModel):
    max_retries: int = Field(0, ge=0, le=MAX_RETRIES, description="Retries after the first attempt. 0: none.")
    initial_backoff_ms: int = Field(1000, ge=0, le=MAX_DURATION_MS)
    backoff_multiplier: float = Field(2.0, ge=1.0, le=100.0)
    max_backoff_ms: int = Field(60000, ge=0, le=MAX_DURATION_MS)
    jitter: float = Field(0.1, ge=0.0, le=1.0, description="Each delay is shortened by up to this fraction.")
    retry_on_exceptions: list[str] = Field(default_factory=list, description="Only these exception types are "
                                           "retried. Empty: any failure (unless a message pattern is given).")
    retry_on_message: str = Field("", description="Only failures whose message matches this RE2 pattern.")

    def options(self) -> dict[str, Any] | None:
        if self.max_retries == 0:
            return None
        out: dict[str, Any] = {"maxRetries": self.max_retries, "initialBackoffMs": self.initial_backoff_ms,
                               "backoffMultiplier": self.backoff_multiplier, "maxBackoffMs": self.max_backoff_ms,
                               "jitter": self.jitter}
        cond: dict[str, Any] = {}
        if self.retry_on_exceptions:
            cond["exceptions"] = self.retry_on_exceptions
        if self.retry_on_message:
            cond["messagePattern"] = self.retry_on_message
        if cond:
            out["retryOn"] = cond
        return out


class TriggerForm(BaseModel):
    on: Literal[("none", *TRIGGER_EVENTS)] = Field(  # type: ignore[valid-type]
        "none", description="A triggered task's event. none: not a triggered task.")
    path: str = Field("", description="file.*: the directory to watch (absolute).")
    pattern: str = Field("", description="file.*: glob of file names, e.g. *.csv. Empty: every file.")
    recursive: bool = Field(False, description="file.*: also watch subdirectories.")
    debounce_ms: int = Field(1000, ge=0, le=3_600_000, description="file.*: run once per burst after this "
                             "much quiet.")
    network_type: Literal["any", "unmetered", "metered", "wifi", "ethernet", "cellular"] = Field(
        "any", description="network.connected / type-changed: only for this kind of network.")

    def options(self) -> dict[str, Any] | None:
        if self.on == "none":
            return None
        out: dict[str, Any] = {"on": self.on}
        if self.on.startswith("file."):
            out |= {"recursive": self.recursive, "debounceMs": self.debounce_ms}
            if self.path.strip():
                out["path"] = self.path.strip()
            if self.pattern.strip():
                out["pattern"] = self.pattern.strip()
        if self.network_type != "any":
            out["networkType"] = self.network_type
        return out


class TargetForm(BaseModel):
    device_ids: list[str] = Field(default_factory=list, description="Wake these registered devices.")
    labels: list[str] = Field(default_factory=list, description="Wake the devices with all these labels.")
    platform: Literal["any", "android", "ios"] = Field("any", description="Only this platform.")
    high_priority: bool = Field(False, description="FCM android priority high.")
    collapse_key: str = Field("", description="Newer pushes replace queued older ones with the same key.")
    pushes_per_hour: int = Field(-1, ge=-1, le=3600, description="Each device's push budget for this task. "
                                 "-1: the platform's default; 0: none.")
    analytics_label: str = Field("", description="FCM analytics label. Empty: the task's name.")

    def options(self) -> dict[str, Any] | None:
        """None when no device is named: the task runs here, not on phones."""
        if not (self.device_ids or self.labels or self.platform != "any"):
            return None
        out: dict[str, Any] = {"highPriority": self.high_priority}
        if self.device_ids:
            out["deviceIds"] = self.device_ids
        if self.labels:
            out["labels"] = self.labels
        if self.platform != "any":
            out["platform"] = self.platform
        if self.collapse_key:
            out["collapseKey"] = self.collapse_key
        if self.pushes_per_hour >= 0:
            out["pushesPerHour"] = self.pushes_per_hour
        if self.analytics_label:
            out["analyticsLabel"] = self.analytics_label
        return out


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def create_options(
    *, name: str, schedule: ScheduleForm, description: str, priority: TaskPriority, handler: str,
    timeout_seconds: int, constraints: ConstraintsForm, retry_policy: RetryForm, trigger: TriggerForm,
    target: TargetForm, data: dict[str, Any],
) -> CreateTaskOptions:
    """The form's values as the API's CreateTaskOptions (its validation names bad fields)."""
    body: dict[str, Any] = {"name": name, "schedule": schedule.options(), "priority": priority.value,
                            "constraints": constraints.options()}
    for key, value in (("description", description.strip()), ("handler", handler.strip()),
                       ("timeoutMs", timeout_seconds * 1000), ("retryPolicy", retry_policy.options()),
                       ("trigger", trigger.options()), ("target", target.options()), ("data", data)):
        if value:
            body[key] = value
    return CreateTaskOptions.model_validate(body)


Seconds = Annotated[int, Field(ge=0, le=MAX_DURATION_MS // 1000, description="Per attempt. 0: no timeout.")]
