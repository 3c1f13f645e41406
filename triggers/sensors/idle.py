"""Device-idle sensor: CPU load, CPU pressure and (where a display exists) user idle time.

A sample is *quiet* when the CPU was busy less than ``cpu_percent`` over the
window since the previous sample (from ``/proc/stat`` counters via psutil, so
the window is exactly the poll interval and no global psutil state is used),
CPU pressure (PSI ``/proc/pressure/cpu`` ``some avg10``, where the kernel has
it) is below ``psi_some_avg10``, and the user has not touched keyboard or
mouse for ``user_idle_s`` (X11 through libXss when a display is given;
otherwise unknown and ignored).

The device becomes idle after ``idle_after_samples`` consecutive quiet
samples and active again after ``active_after_samples`` non-quiet ones, or at
once on user input. That is a pure state machine (:func:`next_idle_state`)
over (previous state, new sample); the counters travel in the state.

Mechanisms (``mode``): ``psi`` (native, Linux >= 4.20 with PSI enabled) uses
CPU percent *and* CPU pressure; ``cpu`` (portable: psutil's CPU times exist on
every platform) uses CPU percent alone and reports ``psi_some_avg10`` as
``None``. They differ only where the CPU is contended but not busy (a
cgroup's CPU quota throttling its tasks, a burst of runnable threads inside
an otherwise quiet window): PSI sees that, a CPU share cannot. ``auto`` takes
``psi`` where ``/proc/pressure/cpu`` reads. User idle (X11) is independent of
the mode.

Events: ``bgtasks.device.idle`` and ``bgtasks.device.active`` (resource
``device``; payload ``cpu_percent``, ``psi_some_avg10``, ``user_idle_s``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from pathlib import Path

import psutil

from triggers.sensors._base import Change, Emit, PollWakeups, Snapshot, Tracker, Wakeups
from triggers.sensors._mechanism import Choice, choose

PROC = Path("/proc")
PSI, CPU = "psi", "cpu"


@dataclass(frozen=True)
class IdleThresholds:
    """What counts as idle. Percentages are of all CPUs together."""

    cpu_percent: float = 10.0
    psi_some_avg10: float = 10.0
    user_idle_s: float = 300.0
    idle_after_samples: int = 3
    active_after_samples: int = 1

    def __post_init__(self) -> None:
        if self.idle_after_samples < 1 or self.active_after_samples < 1:
            raise ValueError("idle_after_samples and active_after_samples must be >= 1")


@dataclass(frozen=True)
class IdleSample:
    """One raw reading: cumulative CPU seconds (busy, total) and the instantaneous signals."""

    cpu_busy_s: float
    cpu_total_s: float
    psi_some_avg10: float | None = None
    user_idle_s: float | None = None


@dataclass(frozen=True)
class IdleState(Snapshot):
    """The idle snapshot. ``streak`` counts consecutive samples that disagree with ``idle``."""

    idle: bool
    cpu_percent: float | None
    psi_some_avg10: float | None
    user_idle_s: float | None
    streak: int
    cpu_busy_s: float
    cpu_total_s: float


def cpu_percent_between(old_busy_s: float, old_total_s: float, busy_s: float, total_s: float) -> float | None:
    """Pure: busy share of all CPU time between two counter readings; ``None`` for an empty window."""
    total = total_s - old_total_s
    if total <= 0:
        return None
    return round(max(0.0, min(100.0, 100.0 * (busy_s - old_busy_s) / total)), 1)


def next_idle_state(previous: IdleState | None, sample: IdleSample, t: IdleThresholds = IdleThresholds()) -> IdleState:
    """Pure: the idle/active state machine."""
    cpu = (
        cpu_percent_between(previous.cpu_busy_s, previous.cpu_total_s, sample.cpu_busy_s, sample.cpu_total_s)
        if previous is not None
        else None
    )
    user_active = sample.user_idle_s is not None and sample.user_idle_s < t.user_idle_s
    if previous is not None and cpu is None and not user_active:
        # No CPU time passed since the last sample (read within the same clock tick): it says
        # nothing about the CPU; the next sample measures from the previous one.
        return previous
    quiet = (
        cpu is not None
        and cpu < t.cpu_percent
        and (sample.psi_some_avg10 is None or sample.psi_some_avg10 < t.psi_some_avg10)
        and not user_active
    )
    idle = previous.idle if previous is not None else False
    streak = previous.streak if previous is not None else 0
    if quiet == idle:
        streak = 0
    else:
        streak += 1
        needed = t.active_after_samples if idle else t.idle_after_samples
        if streak >= needed or (idle and user_active):
            idle, streak = not idle, 0
    return IdleState(idle, cpu, sample.psi_some_avg10, sample.user_idle_s, streak, sample.cpu_busy_s,
                     sample.cpu_total_s)


def diff_idle(old: IdleState | None, new: IdleState) -> list[Change]:
    """Pure: ``device.idle`` / ``device.active`` on a flip (none from the baseline)."""
    if old is None or old.idle == new.idle:
        return []
    payload = {"cpu_percent": new.cpu_percent, "psi_some_avg10": new.psi_some_avg10, "user_idle_s": new.user_idle_s}
    return [Change("device", "idle" if new.idle else "active", "device", payload)]


def read_cpu_seconds() -> tuple[float, float]:
    """Cumulative (busy, total) CPU seconds of all CPUs (guest time is already in user)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = t.user + t.system + t.idle
    for name in ("nice", "iowait", "irq", "softirq", "steal"):
        total += getattr(t, name, 0.0)
    return total - idle, total


def read_psi_some_avg10(proc: Path = PROC) -> float | None:
    """``some avg10`` of ``/proc/pressure/cpu``; ``None`` where PSI is absent or disabled."""
    try:
        text = (proc / "pressure" / "cpu").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "avg10":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("event_mask", ctypes.c_ulong),
    ]


@functools.cache
def _xlibs() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    x11_name, xss_name = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
    if not x11_name or not xss_name:
        return None
    x11, xss = ctypes.CDLL(x11_name), ctypes.CDLL(xss_name)
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XFree.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverQueryExtension.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                               ctypes.POINTER(ctypes.c_int)]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
    xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XScreenSaverInfo)]
    return x11, xss


def x11_user_idle_s(display: str) -> float | None:
    """Seconds since the last keyboard or mouse input on an X11 display (MIT-SCREEN-SAVER).

    ``None`` when libX11/libXss are missing, the display cannot be opened or it
    lacks the extension (checked first: Xlib's default error handler would exit).
    """
    libs = _xlibs()
    if libs is None:
        return None
    x11, xss = libs
    dpy = x11.XOpenDisplay(display.encode())
    if not dpy:
        return None
    try:
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(dpy, ctypes.byref(event_base), ctypes.byref(error_base)):
            return None
        info = xss.XScreenSaverAllocInfo()
        if not info:
            return None
        try:
            if not xss.XScreenSaverQueryInfo(dpy, x11.XDefaultRootWindow(dpy), info):
                return None
            return float(info.contents.idle) / 1000.0
        finally:
            x11.XFree(info)
    finally:
        x11.XCloseDisplay(dpy)


class IdleSensor:
    """Idle / active, sampled every ``poll_s``.

    :param mode: ``auto`` (psi where ``proc`` has it), ``psi`` (raises
        :class:`~triggers.sensors._mechanism.MechanismUnavailable` without PSI) or
        ``cpu``; the outcome is :attr:`choice`.
    :param display: an X11 display name (e.g. ``":0"``) for user idle time;
        ``None``: user idle is unknown and only CPU signals count.
    :param proc: the procfs root for PSI.
    """

    name = "device"
    #: A reading is the CPU share since the last one: sampled sooner than ``poll_s`` apart, it
    #: measures a few clock ticks (noise), so on-demand holders reuse the last one meanwhile.
    windowed = True

    def __init__(
        self,
        *,
        mode: str = "auto",
        poll_s: float = 30.0,
        thresholds: IdleThresholds = IdleThresholds(),
        display: str | None = None,
        proc: Path = PROC,
    ) -> None:
        missing = None
        if mode != CPU and read_psi_some_avg10(proc) is None:
            missing = f"no CPU pressure at {proc / 'pressure' / 'cpu'} (a kernel without PSI, or booted with psi=0)"
        self.choice: Choice = choose(self.name, mode, PSI, CPU, missing)
        self.mechanism = self.choice.mechanism
        self.poll_s = poll_s
        self.thresholds = thresholds
        self.display = display
        self.proc = proc

    def sample(self) -> IdleSample:
        busy, total = read_cpu_seconds()
        user_idle = x11_user_idle_s(self.display) if self.display else None
        psi = read_psi_some_avg10(self.proc) if self.mechanism == PSI else None
        return IdleSample(busy, total, psi, user_idle)

    def snapshot(self, previous: IdleState | None = None) -> IdleState:
        return next_idle_state(previous, self.sample(), self.thresholds)

    def diff(self, old: IdleState | None, new: IdleState) -> list[Change]:
        return diff_idle(old, new)

    def open_wakeups(self) -> Wakeups:
        return PollWakeups(self.poll_s)

    async def watch(self, emit: Emit, stop: asyncio.Event) -> None:
        await Tracker(self).watch(emit, stop)
