"""Which mechanism a sensor uses: the platform's native one, or the portable path.

Each sensor has a native mechanism that only some platforms have (network:
an rtnetlink doorbell; power: the ``power_supply`` sysfs class; device idle:
Linux PSI; files: the platform's file-event API) and a portable path that
works everywhere the libraries run (polling netifaces + psutil,
``psutil.sensors_battery()``, CPU percent alone, watchdog's polling observer).

A mode is ``auto`` (native where it is available here, else portable) or one
of the two mechanisms by name. :func:`choose` makes that decision once, when
the sensor is built, from a probe that says why the native mechanism is
missing (``None``: available). A *forced* native mode on a host without it
raises :class:`MechanismUnavailable` instead of silently degrading: whoever
asked for netlink wants to know they are not getting it. The entry point
(``triggers.constraints.host``) turns that into a one-line error naming the setting.

See docs/sensors.md for what each path can and cannot see on each platform.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

AUTO = "auto"


class MechanismUnavailable(RuntimeError):
    """A sensor was told to use a native mechanism this host does not have.

    ``sensor``, ``mechanism`` and ``reason`` let the caller phrase the fix
    (which setting to change); ``portable`` names the mechanism that would work.
    """

    def __init__(self, sensor: str, mechanism: str, portable: str, reason: str) -> None:
        super().__init__(f"{sensor}: {mechanism} is not available here: {reason}")
        self.sensor = sensor
        self.mechanism = mechanism
        self.portable = portable
        self.reason = reason


@dataclass(frozen=True)
class Choice:
    """The mechanism a sensor runs with, and why (for logs and the daemon's status)."""

    sensor: str
    mechanism: str
    native: bool
    requested: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"mechanism": self.mechanism, "native": self.native, "requested": self.requested,
                "reason": self.reason}


def choose(sensor: str, requested: str, native: str, portable: str, missing: str | None,
           native_name: str | None = None) -> Choice:
    """Pick the mechanism for ``requested`` (``auto``, ``native`` or ``portable``).

    :param missing: why the native mechanism is unavailable here; ``None`` when it is available.
    :param native_name: what the native mechanism is called here, when the mode's word for
        it is generic (the file sensor's ``native`` is ``inotify`` on Linux).
    :raises MechanismUnavailable: ``requested`` is the native mechanism and it is missing.
    :raises ValueError: ``requested`` names neither mechanism nor ``auto``.
    """
    name = native_name or native
    if requested == AUTO:
        if missing is None:
            choice = Choice(sensor, name, True, requested, f"auto: {name} is available")
        else:
            choice = Choice(sensor, portable, False, requested, f"auto: {missing}")
    elif requested == native:
        if missing is not None:
            raise MechanismUnavailable(sensor, native, portable, missing)
        choice = Choice(sensor, name, True, requested, "forced")
    elif requested == portable:
        choice = Choice(sensor, portable, False, requested, "forced")
    else:
        raise ValueError(f"{sensor}: unknown mode {requested!r}; expected {AUTO}, {native} or {portable}")
    logger.info("sensor %s: using %s (%s)", sensor, choice.mechanism, choice.reason)
    return choice
