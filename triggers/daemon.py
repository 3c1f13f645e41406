"""The trigger daemon: the machine's changes as Prefect events (``bgtasks daemon``).

One asyncio process per host. Each state sensor (network, power, device idle,
storage) runs in a :class:`~triggers.sensors.Tracker`; the file sensor follows
the file rules of the triggered tasks that exist, re-read every
``rules_refresh_s`` (a task created, changed or deleted is followed without a
restart). Every change becomes one Prefect event ``bgtasks.<sensor>.<change>``:

- resource: the host, ``bgtasks.host.<hostname>``; network events add the labels
  ``bgtasks.network.kind`` and ``bgtasks.network.metered`` so that a trigger can
  ask for an unmetered or a wifi network;
- related: the interface (``bgtasks.interface.<name>``), the storage path
  (``bgtasks.path.<path>``) or, for files, the task's rule (``bgtasks.rule.<task id>``,
  role ``rule``) and its root;
- payload: the sensor's detail (for files: the paths of the burst).

The daemon talks to the Prefect API with plain httpx (:mod:`triggers.prefect_api`):
no Prefect import, so it stays small; events go through an outbox that survives
a server restart.

The last snapshot of each sensor is kept in ``<home>/daemon-state.json``: on
restart, what changed while the daemon was down is emitted once (a battery that
went low overnight) instead of being taken as the new baseline. ``run_once()``
is one synchronous step (rules, sensors, events) for tests and scripts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgtasks import stored
from bgtasks.settings import Settings
from triggers.prefect_api import PrefectApi
from triggers.constraints.host import HostSensors, HostSnapshot, SensorSettingError, file_sensor
from triggers.sensors import Change, FileRule, Tracker

logger = logging.getLogger("bgtasks.daemon")

Emitter = Callable[[dict[str, Any]], None]


def event_for(change: Change, host: str) -> dict[str, Any]:
    """The Prefect event (as ``emit_event`` keyword arguments) for one change."""
    resource: dict[str, str] = {"prefect.resource.id": f"{stored.HOST_RESOURCE}{host}", "prefect.resource.name": host}
    related: list[dict[str, str]] = []
    payload = dict(change.payload)
    if change.sensor == "network":
        if payload.get("kind") is not None:
            resource[stored.NETWORK_KIND_LABEL] = str(payload["kind"])
        if payload.get("metered") is not None:
            resource[stored.NETWORK_METERED_LABEL] = "true" if payload["metered"] else "false"
        if change.resource:
            related.append({"prefect.resource.id": f"{stored.INTERFACE_RESOURCE}{change.resource}",
                            "prefect.resource.role": "interface", "prefect.resource.name": change.resource})
    elif change.sensor == "file":
        related.append({"prefect.resource.id": f"{stored.RULE_RESOURCE}{change.resource}", "prefect.resource.role": "rule"})
        if payload.get("root"):
            related.append({"prefect.resource.id": f"{stored.PATH_RESOURCE}{payload['root']}", "prefect.resource.role": "path"})
    elif change.sensor == "storage":
        related.append({"prefect.resource.id": f"{stored.PATH_RESOURCE}{change.resource}", "prefect.resource.role": "path"})
    return {"event": change.event, "resource": resource, "related": related, "payload": _jsonable(payload)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def inside_roots(path: str, roots: list[Path]) -> str | None:
    """``path`` with every symlink resolved, if that lies inside one of ``roots`` (also resolved);
    else None. Rules can come from deployments made through the Prefect API or ``prefect
    deploy``, which skip the REST API's check, so the daemon checks again before it watches."""
    resolved = Path(os.path.realpath(path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return str(resolved)
    return None


def rule_for(task_id: str, trigger: Any, root: str | None = None) -> FileRule:
    """The file rule of a triggered task's file trigger (watching ``root``, default its path)."""
    debounce_s = trigger.debounce_ms / 1000.0
    return FileRule(
        rule_id=task_id,
        root=root or trigger.path,
        recursive=trigger.recursive,
        patterns=(trigger.pattern or "*",),
        kinds=frozenset({trigger.on.split(".", 1)[1]}),
        debounce_s=debounce_s,
        max_wait_s=max(debounce_s * 10, 10.0),
    )


class TriggerDaemon:
    """Sensors -> events. ``emit`` receives ``emit_event`` keyword arguments (tests record them)."""

    def __init__(self, settings: Settings, emit: Emitter | None = None,
                 state_path: Path | None = None) -> None:
        self.settings = settings
        auth = settings.server.auth_string
        self.api = PrefectApi(settings.api_url,
                              auth_string=auth.get_secret_value() if auth else os.environ.get("PREFECT_API_AUTH_STRING"),
                              api_key=os.environ.get("PREFECT_API_KEY"))
        self.emit: Emitter = emit or (lambda event: self.api.emit(**event))
        self.host = settings.host_name
        self.state_path = state_path or settings.home / "daemon-state.json"
        self.host_sensors = HostSensors(settings)
        self.trackers: dict[str, Tracker[Any]] = self.host_sensors.trackers
        self.files = file_sensor(settings) if "file" in settings.daemon.sensors else None
        self.mechanisms = self.host_sensors.mechanisms()
        if self.files is not None:
            self.mechanisms["file"] = self.files.mechanism
        self._rule_specs: dict[str, FileRule] = {}
        self._refused: dict[str, str] = {}  # task id -> the path it may not watch (logged once)
        self._release_wanted = asyncio.Event()
        self.emitted = 0

    # ---- state kept across restarts ------------------------------------------------

    def _restore(self) -> None:
        """Take the last snapshots saved as each tracker's baseline (when they still parse)."""
        try:
            saved = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return
        for name, tracker in self.trackers.items():
            snap = saved.get(name)
            if not isinstance(snap, dict):
                continue
            try:
                tracker.current = _revive(tracker, snap)
            except Exception:  # noqa: BLE001 - a changed snapshot format: start from a fresh baseline
                tracker.current = None

    def save(self) -> None:
        """Write the sensors' last snapshots (restored at the next start), and for people and
        tests: the file rules being watched and how many events were emitted."""
        state = self.host_snapshot().to_json()
        state["_daemon"] = {"pid": os.getpid(), "emitted": self.emitted, "rules": sorted(self._rule_specs),
                            "mechanisms": self.mechanisms}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state, default=str))
        os.replace(tmp, self.state_path)

    def host_snapshot(self) -> HostSnapshot:
        """The state sensors' last readings (what constraint checks read)."""
        return HostSnapshot.of({name: t.current for name, t in self.trackers.items()})

    def snapshot(self) -> dict[str, Any]:
        """Every sensor's state as plain JSON, read now where there is no reading yet, and the
        file rules (for ``bgtasks daemon status``)."""
        out = HostSnapshot.of({name: t.current if t.current is not None else t.prime()
                               for name, t in self.trackers.items()}).to_json()
        if self.files is not None:
            out["file"] = {"rules": [{"task": r.rule_id, "root": r.root, "patterns": list(r.patterns),
                                      "kinds": sorted(r.kinds)} for r in self.files.rules]}
        return out

    # ---- rules from the triggered tasks ------------------------------------------------

    async def wanted_rules(self) -> dict[str, FileRule]:
        """The file rules of the triggered tasks that exist now (cancelled ones excluded)."""
        rules: dict[str, FileRule] = {}
        for dep in await self.api.triggered_deployments([stored.TAG, "type:triggered"]):
            if stored.CANCELLED_TAG in (dep.get("tags") or []):
                continue
            try:
                opts = stored.read(dep.get("parameters"))
            except ValueError:  # pydantic's ValidationError: a broken definition must not stop the daemon
                logger.warning("task %s: unreadable definition; its trigger is ignored", dep.get("name"))
                continue
            if opts is not None and opts.trigger is not None and opts.trigger.on.startswith("file."):
                root = inside_roots(opts.trigger.path or "", self.settings.daemon.allowed_roots)
                if root is None:
                    if self._refused.get(dep["id"]) != opts.trigger.path:
                        logger.warning("task %s: not watching %s: outside BGTASKS_DAEMON_ALLOWED_ROOTS (symlinks "
                                       "resolved)", dep.get("name"), opts.trigger.path)
                    self._refused[dep["id"]] = opts.trigger.path or ""
                    continue
                self._refused.pop(dep["id"], None)
                rules[dep["id"]] = rule_for(dep["id"], opts.trigger, root)
        return rules

    async def refresh_rules(self) -> None:
        if self.files is None:
            return
        try:
            wanted = await self.wanted_rules()
        except Exception as exc:  # noqa: BLE001 - the server may be restarting: keep the current rules
            logger.warning("could not read the triggered tasks (%s); keeping %d rule(s)", exc, len(self._rule_specs))
            return
        for rule_id in [r for r in self._rule_specs if wanted.get(r) != self._rule_specs[r]]:
            await asyncio.to_thread(self.files.remove_rule, rule_id)
            del self._rule_specs[rule_id]
        for rule_id, rule in wanted.items():
            if rule_id not in self._rule_specs:
                try:
                    await asyncio.to_thread(self.files.add_rule, rule)
                except (ValueError, OSError) as exc:
                    logger.warning("task %s: cannot watch %s: %s", rule_id, rule.root, exc)
                    continue
                self._rule_specs[rule_id] = rule
                logger.info("watching %s for task %s", rule.root, rule_id)
        await asyncio.to_thread(self.save)

    # ---- emitting -------------------------------------------------------------------

    def _deliver(self, change: Change) -> None:
        event = event_for(change, self.host)
        logger.info("%s %s", event["event"], json.dumps(event["payload"])[:300])
        self.emit(event)
        self.emitted += 1

    async def _deliver_and_save(self, change: Change) -> None:
        self._deliver(change)
        await asyncio.to_thread(self.save)
        if change.sensor != "file":
            self._release_wanted.set()

    # ---- releasing runs that wait for constraints ----------------------------------------

    async def release_waiting(self) -> list[str]:
        """Release the pool's runs waiting for constraints that now hold here; their ids."""
        from triggers.constraints.waiting import releasable, release_message, waiting_filter

        snapshot = self.host_snapshot()
        runs = await self.api.flow_runs(waiting_filter(self.settings.worker.pool))
        released = []
        for run_id, body in releasable(runs, snapshot, release_message(self.host, "daemon")):
            await self.api.set_state(run_id, body)
            released.append(run_id)
            logger.info("released run %s: its constraints hold", run_id)
        return released

    async def _release_loop(self, stop: asyncio.Event) -> None:
        """Release waiting runs after each state change (and at start)."""
        self._release_wanted.set()
        while not stop.is_set():
            waiter = asyncio.ensure_future(self._release_wanted.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                return
            self._release_wanted.clear()
            try:
                await self.release_waiting()
            except Exception as exc:  # noqa: BLE001 - the server may be away: the next change retries
                logger.warning("could not release waiting runs: %s", exc)

    # ---- running ----------------------------------------------------------------------

    async def run_once(self) -> list[Change]:
        """One step: refresh the rules, snapshot every state sensor, emit what changed."""
        if not any(t.current is not None for t in self.trackers.values()):
            self._restore()
        await self.refresh_rules()
        changes: list[Change] = []
        for tracker in self.trackers.values():
            changes.extend(await asyncio.to_thread(tracker.step))
        for change in changes:
            self._deliver(change)
        await asyncio.to_thread(self.save)
        await self.api.flush()
        await self.release_waiting()
        return changes

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: sensors emit as they change; rules follow the tasks; the outbox
        is flushed before returning (as far as the server answers)."""
        sender_stop = asyncio.Event()
        sender = asyncio.create_task(self.api.sender(sender_stop), name="events")
        try:
            await self._run(stop)
        finally:
            sender_stop.set()
            try:
                await asyncio.wait_for(sender, 15)
            except TimeoutError:
                logger.warning("gave up sending %d event(s) at shutdown", len(self.api.outbox))
            await self.api.aclose()

    async def _run(self, stop: asyncio.Event) -> None:
        logger.info("sensor mechanisms: %s", ", ".join(f"{n}={m}" for n, m in self.mechanisms.items()))
        self._restore()
        # Changes while the daemon was down: one step against the saved baselines.
        for tracker in self.trackers.values():
            if tracker.current is not None:
                for change in await asyncio.to_thread(tracker.step):
                    self._deliver(change)
        await asyncio.to_thread(self.save)
        if self.files is not None:
            # Watching before the first rules are added: a rule is armed when it is added,
            # so a file that arrives once the state file lists the rule is seen (otherwise
            # it would be in the baseline the observer takes when it starts).
            await asyncio.to_thread(self.files.start)
        await self.refresh_rules()
        jobs = [asyncio.create_task(t.watch(self._deliver_and_save, stop), name=f"sensor-{n}")
                for n, t in self.trackers.items()]
        if self.files is not None:
            jobs.append(asyncio.create_task(self.files.watch(self._deliver_and_save, stop), name="sensor-file"))
        jobs.append(asyncio.create_task(self._rules_loop(stop), name="rules"))
        jobs.append(asyncio.create_task(self._release_loop(stop), name="release"))
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*jobs, return_exceptions=True)
            if self.files is not None:
                await asyncio.to_thread(self.files.close)  # started here, not by its watch()
            self.save()

    async def _rules_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.settings.daemon.rules_refresh_s)
            except TimeoutError:
                await self.refresh_rules()


def _revive(tracker: Tracker[Any], saved: dict[str, Any]) -> Any:
    """A saved snapshot as the sensor's snapshot type (the type of a fresh snapshot).

    Enum fields come back as their string values, which compare equal to the
    enums (StrEnum); a snapshot type whose fields changed raises and the daemon
    starts from a fresh baseline instead.
    """
    cls = type(tracker.sensor.snapshot(None))
    if hasattr(cls, "from_dict"):
        return cls.from_dict(saved)
    names = set(getattr(cls, "__dataclass_fields__", {}))
    if set(saved) != names:
        raise ValueError("snapshot format changed")
    return cls(**saved)


def main() -> int:
    """``python -m triggers.daemon``: what ``bgtasks daemon`` execs into, so the long-lived
    process carries neither the CLI nor Prefect (smaller RSS). One daemon per host."""
    import signal

    from bgtasks.home import ensure_home, private_umask
    from bgtasks.settings import load_settings

    private_umask()
    settings = load_settings()
    ensure_home(settings.home)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    pidfile = settings.home / "daemon.pid"
    try:
        other = int(pidfile.read_text())
        os.kill(other, 0)
    except (OSError, ValueError):
        pass  # none, or a stale pidfile
    else:
        if other != os.getpid():
            print(f"a trigger daemon already runs on this host (PID {other}); one per host", flush=True)
            return 1
    try:
        daemon = TriggerDaemon(settings)
    except SensorSettingError as exc:
        print(f"cannot start the trigger daemon: {exc}", flush=True)
        return 1

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(str(os.getpid()))
        try:
            await daemon.run(stop)
        finally:
            pidfile.unlink(missing_ok=True)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
