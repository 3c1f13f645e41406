"""The demo handler: succeeds, fails on demand, or sleeps.

``data`` (all optional):

- ``sleepSeconds``: sleep this long first (a blocking ``time.sleep``);
- ``sleepRuns``: sleep only in the first N runs of the flow run (a run retried after
  a crash runs again: its second run then goes straight on);
- ``sleepAttempts``: sleep only in the first N attempts (a timed-out attempt's retry
  then goes straight on);
- ``fail``: ``true`` fails every attempt; ``failTimes``: fail the first N attempts;
- ``errorType``: the exception raised on failure (``RuntimeError`` by default;
  ``ValueError``, ``TimeoutError``, ``ConnectionError``, ``PermissionError``);
- ``errorMessage``: its message;
- ``blockSignals``: block SIGALRM while sleeping, as a C extension stuck in a call
  would, so only a process-level timeout can stop it;
- ``recordTo``: append one JSON line per attempt (``attempt``, ``pid``, ``ppid``, ``at``, ``run``, ``host``)
  to this file, so a demo can show when and where each attempt ran. The file must lie
  inside the allowed roots (``BGTASKS_TASK_FILE_ROOTS``) and is never opened through a
  symlink (:mod:`flows._confined`);
- ``exitCode``: end the run's process at once with ``os._exit(exitCode)``, as a
  crashing native library would (the run ends Crashed);
- ``message``: echoed in the result.

A triggered run also gets the triggering ``event`` (name, id, occurred, payload):
it is recorded and returned under ``event``.

Every knob is bounded (:data:`LIMITS`): a value outside its bounds fails the run at
once, without retries.

Returns ``{"message", "timestamp", "attempt"}`` like the spec's demo task.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

from prefect.runtime import flow_run, task_run

from flows._confined import append_line
from flows._handler import background_handler

_ERRORS: dict[str, type[Exception]] = {
    "RuntimeError": RuntimeError,
    "ValueError": ValueError,
    "TimeoutError": TimeoutError,
    "ConnectionError": ConnectionError,
    "PermissionError": PermissionError,
}


#: Bounds of the numeric knobs (inclusive) and the longest texts.
LIMITS: dict[str, tuple[float, float]] = {
    "sleepSeconds": (0, 3600), "sleepRuns": (0, 1000), "sleepAttempts": (0, 100), "failTimes": (0, 100),
    "exitCode": (0, 255),
}
MAX_TEXT = 1000


class InvalidData(ValueError):
    """The task's data is out of bounds: no retry can fix it."""

    retryable = False


def check_data(opts: dict[str, Any]) -> None:
    """Refuse knobs outside :data:`LIMITS` and texts longer than :data:`MAX_TEXT`."""
    for key, (low, high) in LIMITS.items():
        value = opts.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise InvalidData(f"data.{key}: must be a number from {low:g} to {high:g}")
    for key in ("message", "errorMessage", "recordTo", "errorType"):
        if opts.get(key) is not None and (not isinstance(opts[key], str) or len(opts[key]) > MAX_TEXT):
            raise InvalidData(f"data.{key}: must be a text of at most {MAX_TEXT} characters")


@background_handler("demo")
def demo(data: Any = None, event: dict[str, Any] | None = None) -> dict[str, Any]:
    """A demo task: succeed, fail on demand, or sleep for N seconds."""
    opts = data if isinstance(data, dict) else {}
    check_data(opts)
    attempt = int(task_run.run_count or 1)
    if opts.get("recordTo"):
        from bgtasks.settings import load_settings

        settings = load_settings()
        line = {"attempt": attempt, "pid": os.getpid(), "ppid": os.getppid(), "at": datetime.now(UTC).isoformat(),
                "run": flow_run.id, "event": event, "host": settings.host_name}
        append_line(opts["recordTo"], settings.handler_roots, "data.recordTo", json.dumps(line) + "\n")
    if opts.get("exitCode") is not None:
        os._exit(int(opts["exitCode"]))
    sleep_s = float(opts.get("sleepSeconds", 0))
    if opts.get("sleepRuns") is not None and int(flow_run.run_count or 1) > int(opts["sleepRuns"]):
        sleep_s = 0
    if opts.get("sleepAttempts") is not None and attempt > int(opts["sleepAttempts"]):
        sleep_s = 0
    if sleep_s > 0:
        if opts.get("blockSignals"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(sleep_s)
    fail_times = opts.get("failTimes")
    if opts.get("fail") or (fail_times is not None and attempt <= int(fail_times)):
        error = _ERRORS.get(str(opts.get("errorType", "RuntimeError")), RuntimeError)
        raise error(opts.get("errorMessage", f"demo failure on attempt {attempt}"))
    result = {
        "message": opts.get("message", "Task completed successfully"),
        "timestamp": datetime.now(UTC).isoformat(),
        "attempt": attempt,
    }
    if event is not None:
        result["event"] = event  # what triggered the run (a triggered task)
    return result
