"""The embedded stack as boot-time services: pure generation of the files and commands.

``bgtasks service install`` (:mod:`bgtasks.cli.service_cmds`) runs the four parts of
``bgtasks up`` (:mod:`bgtasks.stack`) under the machine's service manager instead of
in a terminal. This module only *computes*: given the settings, the Python of the
bgtasks environment, the platform flavour and the scope, :func:`plan` returns the
files to write (path, bytes, mode) and the commands that install, start, stop,
query and remove them. It reads no environment, no clock and no file: the same
inputs give byte-identical files, which the snapshot tests pin.

The parts (:mod:`bgtasks.parts`, the same for ``bgtasks up``), in start order:

- ``server``: ``python -m bgtasks.prefect_server server start --host H --port P`` (Prefect's CLI, see
  :mod:`bgtasks.prefect_server`; absent when
  ``BGTASKS_SERVER_API_URL`` points at an existing Prefect API);
- ``worker``: ``python -m prefect worker start --pool .. --type .. --limit ..
  --name bgtasks-<host>`` (a stable name: a restarted service is the same worker);
- ``daemon``: ``python -m triggers.daemon``, the process ``bgtasks daemon`` execs into
  (the service's environment already carries what ``bgtasks daemon`` would set, and
  on Windows an exec is a spawn-and-exit that a supervisor cannot follow);
- ``api``: ``bgtasks api --host H --port P``.

Every part gets the same environment (:func:`service_env`): ``Settings.prefect_env()``,
the settings that decide ports, pool and home as ``BGTASKS_*`` variables, the
``BGTASKS_*``/``PREFECT_*`` variables of the installing shell (the caller passes them;
explicit settings win), and ``PATH`` with the environment's ``bin`` first (the worker
runs flows with ``python -m prefect.engine``). A file carrying a secret (a password
in a database URL, a ``*_KEY``/``*TOKEN``/``*SECRET``/``*PASSWORD`` variable) is
written ``0600``.

**systemd** (Linux): ``bgtasks-{server,worker,daemon,api}.service`` and
``bgtasks.target``, which ``Wants=`` them and is the one unit enabled
(``WantedBy=default.target`` for ``--user``, ``multi-user.target`` for ``--system``).
Every service is ``PartOf=bgtasks.target`` so stopping or restarting the target
reaches them (``systemctl stop bgtasks.target`` returns before they are down: the
target has no ordering on them; ``uninstall`` stops the five units in one transaction,
which systemctl waits for). Checked under a real ``systemd --user``: start in order
with the health wait (14 s), ``kill -9`` of the worker restarts it, a stop goes API,
daemon, worker (exit 0 on the first signal), server, and a restart of the server
restarts the other three after it.

- *Stop order* (workers before the server: a server stopped first fails their last state reports): worker, daemon and API have
  ``After=bgtasks-server.service``, the daemon also ``After=`` the worker, the API
  ``After=`` both. systemd stops in the reverse of the start order, so a stop of the
  target (or a shutdown) stops API, daemon, worker, then the server: the order of
  ``Stack.stop``. They have ``Wants=`` + ``PartOf=`` the server, not ``Requires=``:
  stopping or restarting the server stops or restarts them first, but a server that
  failed once at boot does not leave them failed with "dependency failed" for good;
  they start, wait, and restart on failure until it answers.
- *Waiting for the server*: systemd cannot wait for an HTTP health check, so the
  server unit has ``ExecStartPost=bgtasks service wait-server``: the unit becomes
  *active* only when ``/api/health`` answers, and ``After=`` it therefore means
  "after the server is healthy". The worker's ``ExecStartPre=bgtasks service
  wait-server --prepare`` waits too (the only wait when the Prefect API is external)
  and creates the pool, its priority queues and the control deployments, as
  ``bgtasks up`` does before its worker.
- *The worker's stop*: ``KillSignal=SIGTERM``, ``KillMode=mixed``,
  ``TimeoutStopSec=30``. Prefect's worker handles SIGINT and SIGTERM alike
  (``prefect.utilities.processutils.setup_signal_handlers_worker``): the first
  signal makes it SIGINT itself, a graceful stop (no more polling, in-flight runs
  finish); the *second one only makes it SIGKILL itself*. The "second SIGINT" of
  ``Stack.stop`` is therefore the same act as systemd's SIGKILL when ``TimeoutStopSec``
  runs out, so no ``ExecStop=`` script is needed: a worker that ignores the first
  signal is killed after the grace, as ``Stack.stop``'s second SIGINT would. SIGTERM
  rather than SIGINT: the same graceful path once Prefect's handler is installed,
  but a stop that lands while Python is still starting (a restart right after a
  start, or the ``ExecStartPre`` wait) ends the process by the signal, which systemd
  counts as clean, instead of a ``KeyboardInterrupt`` traceback and exit 1, which it
  records as a failure (seen under a real ``systemd --user``; there the idle worker
  honoured the first signal and exited 0 in 0.4 s). ``KillMode=mixed`` signals the
  main process only, as ``Stack.stop`` does, and SIGKILLs what is left in the
  cgroup (flow-run children) once it is gone. The other parts get SIGTERM too
  (uvicorn and the daemon stop gracefully on it) with their ``bgtasks up`` graces.
- ``Restart=on-failure``, ``RestartSec=5``; logs go to the journal
  (``SyslogIdentifier=bgtasks-<part>``); ``--system`` units run as ``User=`` the
  installing user (``sudo``'s ``SUDO_USER``) and order after
  ``network-online.target`` (a PostgreSQL database may be remote).

Quoting: ``%`` is doubled everywhere (systemd specifiers), ``$`` doubled in command
lines (systemd variables); a word with blanks, quotes, backslashes or ``;`` is
double-quoted with ``\\`` and ``\\"`` escapes; ``Environment="K=V"`` the same way.
Control characters are refused (a unit file is line-based).

**launchd** (macOS): one plist per part, label ``dev.bgtasks.<part>``, in
``~/Library/LaunchAgents`` (``--user``) or ``/Library/LaunchDaemons`` (``--system``,
``UserName`` set, ``HOME`` given). ``RunAtLoad``, ``KeepAlive={SuccessfulExit: false}``
(restart on failure), ``ThrottleInterval=5``, ``ExitTimeOut`` = the part's stop grace,
``StandardOutPath``/``StandardErrorPath`` = ``<home>/logs/<part>.log`` as with
``bgtasks up``. launchd has no dependencies, so worker, daemon and API start through
``bgtasks service run --wait-server S [--prepare] -- <argv>``, which waits for the
server's health (and prepares the pool) and then *execs* the part: the PID launchd
watches and signals is the part's own. launchd stops with SIGTERM then SIGKILL after
``ExitTimeOut``; Prefect's worker turns a first SIGTERM into its graceful SIGINT and a
second one into SIGKILL, so this is again ``Stack.stop``'s sequence. Stop order is ours to
keep: ``uninstall`` boots out API, daemon, worker, then the server.

**Windows**: Task Scheduler, not a Windows service. A service proper must answer the
Service Control Manager, which needs pywin32 (or a wrapper such as NSSM/WinSW);
Task Scheduler ships with Windows and needs nothing. One task per part,
``\\bgtasks\\<part>``, triggered at logon of the user (``--user``, interactive token) or
at boot (``--system``, as the user with the S4U logon: no stored password, local
resources only), no execution time limit, not stopped on batteries. Task Scheduler
passes no environment, captures no output and restarts only when an action *fails to
start* (MS-TSCH 2.5.4.2), not when it exits non-zero, so each task runs
``pythonw.exe -c <bgtasks cli> service run --env-file .. --log .. --restart-s 5 [--wait-server S]
-- <argv>``: a small supervisor that loads the environment file
(``<home>\\service\\env.json``, written with the tasks), appends the part's output to
``<home>\\logs\\<part>.log``, restarts it when it fails, and holds it in a
kill-on-close job object so ending the task ends the part. Ending a task is
TerminateProcess, not a graceful stop (Windows has no signal to send a windowless
process); ``uninstall`` still ends API, daemon, worker, then the server.
The XML is UTF-16 (with BOM), the encoding ``schtasks /Create /XML`` expects.
"""

from __future__ import annotations

import json
import math
import plistlib
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from xml.sax.saxutils import escape as xml_escape
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Literal
from xml.etree import ElementTree as ET

from bgtasks.parts import Command, Part
from bgtasks.parts import parts as stack_parts
from bgtasks.parts import role_parts
from bgtasks.settings import Settings

Flavour = Literal["linux", "macos", "windows"]
Scope = Literal["user", "system"]

PART_NAMES = ("server", "worker", "daemon", "api")
TARGET = "bgtasks.target"
LAUNCHD_PREFIX = "dev.bgtasks."
TASK_FOLDER = "bgtasks"
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
#: Seconds between a failure and the restart (systemd RestartSec, launchd ThrottleInterval,
#: the Windows supervisor's pause).
RESTART_S = 5
#: Python's command line for the bgtasks CLI where no console script can be used
#: (Windows tasks run pythonw.exe, which opens no console window).
CLI_BOOTSTRAP = "from bgtasks.cli import main; raise SystemExit(main())"
HEADER = "Generated by `bgtasks service install` (bgtasks/service.py); reinstall to change it."
_DEFAULT_PATH = {
    "linux": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "macos": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
}
_SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|_KEY$|AUTH_STRING)")
#: systemd's sandbox for every part (``systemd-analyze security`` explains each). Writable:
#: the home, and for the worker the handlers' file roots; the rest of the system and the
#: users' homes read-only; no capabilities, no new privileges, no devices, no kernel knobs.
SYSTEMD_SANDBOX = (
    "UMask=0077", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only",
    "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes", "ProtectClock=yes", "ProtectHostname=yes", "ProtectProc=invisible",
    "RestrictSUIDSGID=yes", "RestrictRealtime=yes", "RestrictNamespaces=yes", "LockPersonality=yes",
    "SystemCallArchitectures=native", "SystemCallFilter=@system-service", "SystemCallFilter=~@privileged",
    "SystemCallErrorNumber=EPERM", "PrivateMounts=yes", "RemoveIPC=yes",
    "CapabilityBoundingSet=", "AmbientCapabilities=",
    # AF_NETLINK: the daemon's network doorbell, and every part's interface listing (getifaddrs).
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
)
#: Where a private /tmp would hide what a part must see.
_SHARED_TMP = ("/tmp", "/var/tmp")
#: systemd's EnvironmentFile of the secret variables (under the home).
SECRETS_ENV = "secrets.env"
#: The environment file of a ``--role`` install: every setting of the host's parts (0600).
ROLES_ENV = "bgtasks.env"
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:[^/@\s]+@")


@dataclass(frozen=True)
class Target:
    """Where and for whom the services are installed (everything the caller looks up).

    ``python`` is the absolute path of the bgtasks environment's interpreter
    (``sys.executable``); the ``bgtasks`` console script sits next to it.
    ``user``/``user_home`` are whom the services run as (``--system``) and where
    per-user files go (``--user``); ``uid`` names launchd's ``gui/<uid>`` domain.
    """

    flavour: Flavour
    scope: Scope
    python: str
    user: str
    user_home: str
    hostname: str
    uid: int = 0
    roles: tuple[str, ...] = ()  # the multi-host layout's roles on this host (bgtasks.parts.ROLES); () = the stack


@dataclass(frozen=True)
class ServiceFile:
    path: str
    content: bytes
    mode: int = 0o644

    def text(self) -> str:
        """The content as text (UTF-16 for Windows task XML, UTF-8 otherwise)."""
        if self.content.startswith(b"\xff\xfe"):
            return self.content[2:].decode("utf-16-le")
        return self.content.decode("utf-8")


@dataclass(frozen=True)
class Step:
    """A command to run; ``check``: a failure stops the operation (else it is reported)."""

    argv: Command
    check: bool = True


@dataclass(frozen=True)
class Plan:
    """Everything ``bgtasks service`` does on one machine, computed up front."""

    target: Target
    parts: tuple[Part, ...]
    units: tuple[str, ...]  # per part, in start order: unit names, launchd labels, task names
    files: tuple[ServiceFile, ...]
    dirs: tuple[str, ...]  # created (for the run-as user) before the files are written
    install: tuple[Step, ...]
    uninstall: tuple[Step, ...]  # before the files are removed
    after_remove: tuple[Step, ...]
    status: tuple[Step, ...]  # one per part, in start order
    log_files: tuple[str, ...] = ()  # launchd and Windows: <home>/logs/<part>.log per part
    manager: str = ""  # the program that must be on PATH to install
    secrets: tuple[str, ...] = field(default=(), repr=False)  # secret values in the files (masked in dry runs)

    def masked(self, f: ServiceFile) -> str:
        """``f``'s text with every secret value replaced by ``<secret, not shown>``."""
        text = f.text()
        for value in self.secrets:
            for form in {value, xml_escape(value), json.dumps(value)[1:-1]}:
                text = text.replace(form, "<secret, not shown>")
        return text

    def unit_of(self, part: str) -> str:
        return self.units[[p.name for p in self.parts].index(part)]

    def logs_command(self, lines: int, follow: bool, parts: tuple[str, ...] = ()) -> Command | None:
        """journalctl for systemd; ``None`` elsewhere (the CLI tails ``log_files``)."""
        if self.target.flavour != "linux":
            return None
        cmd = ["journalctl", *(["--user"] if self.target.scope == "user" else [])]
        for p in self.parts:
            if not parts or p.name in parts:
                cmd += ["-u", self.unit_of(p.name)]
        cmd += ["-n", str(lines), "--no-pager"] + (["-f"] if follow else [])
        return tuple(cmd)


# --------------------------------------------------------------------------- parts


def _path(flavour: Flavour, *segments: str | PurePath) -> PurePath:
    return (PureWindowsPath if flavour == "windows" else PurePosixPath)(*[str(s) for s in segments])


def bgtasks_exe(target: Target) -> str:
    py = _path(target.flavour, target.python)
    return str(py.with_name("bgtasks.exe" if target.flavour == "windows" else "bgtasks"))


def parts(settings: Settings, target: Target) -> tuple[Part, ...]:
    """The stack's parts (:mod:`bgtasks.parts`), or the roles', as ``target`` runs them; the
    worker is named after the host, without a PID (a restarted service is the same worker)."""
    name = f"bgtasks-{target.hostname}"
    if target.roles:
        return role_parts(settings, target.roles, target.python, bgtasks_exe(target), name)
    return stack_parts(settings, target.python, bgtasks_exe(target), name)


def wait_timeout_s(settings: Settings) -> int:
    return math.ceil(settings.server.start_timeout_s)


# --------------------------------------------------------------------------- environment


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings every part must agree on, as the ``BGTASKS_*`` variables that set them."""
    s = settings
    env = {
        "BGTASKS_HOME": str(s.home),
        "BGTASKS_SERVER_HOST": s.server.host,
        "BGTASKS_SERVER_PORT": str(s.server.port),
        "BGTASKS_API_HOST": s.api.host,
        "BGTASKS_API_PORT": str(s.api.port),
        "BGTASKS_API_AUTH": s.api.auth,
        "BGTASKS_WORKER_POOL": s.worker.pool,
        "BGTASKS_WORKER_TYPE": s.worker.type,
        "BGTASKS_WORKER_LIMIT": str(s.worker.limit),
    }
    for key, value in (("BGTASKS_SERVER_DATABASE_URL", s.server.database_url),
                       ("BGTASKS_SERVER_API_URL", s.server.api_url),
                       ("BGTASKS_SERVER_REDIS_URL", s.server.redis_url),
                       ("BGTASKS_RESULTS_PATH", str(s.results_path) if s.results_path else None),
                       ("BGTASKS_DATABASE_URL", s.database_url),
                       ("BGTASKS_SERVER_AUTH_STRING",
                        s.server.auth_string.get_secret_value() if s.server.auth_string else None)):
        if value:
            env[key] = value
    return env


def service_env(settings: Settings, target: Target, extra_env: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment of every part, sorted by name.

    ``extra_env``: the installing shell's variables; only ``BGTASKS_*`` and ``PREFECT_*``
    are kept, and the settings' own values win over them.
    """
    env = {k: v for k, v in extra_env.items() if k.startswith(("BGTASKS_", "PREFECT_"))}
    env.update(settings_env(settings))
    # A host of the multi-host layout that runs a Prefect server or its services serves,
    # though its Prefect API URL is the load balancer's.
    serving = bool({"server-api", "server-services"} & set(target.roles)) if target.roles else None
    env.update(settings.prefect_env(serving=serving))
    if target.roles:
        env["BGTASKS_HOST_NAME"] = target.hostname
    if target.flavour == "windows":
        # Paths computed on another OS (a dry run) are normalized; the supervisor puts
        # the environment's Scripts directory first on PATH at run time.
        for key in ("BGTASKS_HOME", "PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH"):
            env[key] = str(PureWindowsPath(env[key]))
    else:
        env["PATH"] = f"{_path(target.flavour, target.python).parent}:{_DEFAULT_PATH[target.flavour]}"
    if target.flavour == "macos" and target.scope == "system":
        env["HOME"] = target.user_home
    for key, value in env.items():
        if any(ord(c) < 32 or ord(c) == 127 for c in key + value):
            raise ValueError(f"environment variable {key}: control characters (newlines) cannot go "
                             "into a service definition")
    return dict(sorted(env.items()))


def is_secret(key: str, value: str) -> bool:
    """A credential: a ``*PASSWORD``/``*SECRET``/``*TOKEN``/``*_KEY``/``*AUTH_STRING`` variable, or a
    URL with a password."""
    return bool(_SECRET_KEY.search(key) or _URL_PASSWORD.search(value))


def has_secret(env: Mapping[str, str]) -> bool:
    """Whether a file holding ``env`` must be private to its owner (mode 0600)."""
    return any(is_secret(k, v) for k, v in env.items())


def split_secrets(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``env`` as (public, secret) variables."""
    public = {k: v for k, v in env.items() if not is_secret(k, v)}
    return public, {k: v for k, v in env.items() if k not in public}


def environment_file(env: Mapping[str, str]) -> bytes:
    """systemd's ``EnvironmentFile=`` format, each value single-quoted (taken literally)."""
    lines = [f"# {HEADER}", "# Secret variables of the bgtasks services (mode 0600; read by systemd)."]
    for key, value in env.items():
        if "'" in value:
            raise ValueError(f"environment variable {key}: a single quote cannot go into a systemd "
                             "EnvironmentFile value")
        lines.append(f"{key}='{value}'")
    return ("\n".join(lines) + "\n").encode()


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def sandbox(settings: Settings, part: Part) -> list[str]:
    """The sandbox lines of ``part``'s unit: :data:`SYSTEMD_SANDBOX`, its writable paths and /tmp."""
    writable = [f"ReadWritePaths={systemd_path_word(str(settings.home))}"]
    watched: list[str] = []
    if part.name == "worker":
        roots = [str(r) for r in settings.handler_roots]
        # "-": a root that does not exist yet must not stop the worker from starting.
        if settings.results_path is not None:  # a cluster's shared results
            roots.append(str(settings.results_path))
        writable += [f"ReadWritePaths={systemd_path_word('-' + r)}" for r in roots
                     if not _inside(r, (str(settings.home),))]
        watched = roots
    elif part.name == "daemon":
        watched = [str(r) for r in settings.daemon.allowed_roots]
    # A private /tmp would hide the files a worker's handler or a daemon's trigger must see there.
    shared = any(_inside(r, _SHARED_TMP) for r in watched)
    return [*SYSTEMD_SANDBOX, *writable, f"PrivateTmp={'no' if shared else 'yes'}"]


# --------------------------------------------------------------------------- systemd


def systemd_word(arg: str) -> str:
    """One argument of an ``Exec*=`` line, escaped for systemd's own parser."""
    s = arg.replace("%", "%%").replace("$", "$$")
    if not s or s == ";" or any(c in s for c in " \t\"'\\;"):
        s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def systemd_command(argv: Command) -> str:
    return " ".join(systemd_word(a) for a in argv)


def systemd_env(key: str, value: str) -> str:
    """An ``Environment=`` line: one quoted assignment; ``%`` doubled, ``\\`` and ``"`` escaped."""
    assignment = f"{key}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{assignment}"'


def systemd_path(path: str) -> str:
    """A path setting (``WorkingDirectory=``) taken literally but for specifiers."""
    return path.replace("%", "%%")


def systemd_path_word(path: str) -> str:
    """One entry of a path list (``ReadWritePaths=``): specifiers escaped, quoted when it has
    blanks, quotes or backslashes (a prefix such as ``-`` goes inside the quotes)."""
    s = path.replace("%", "%%")
    if any(c in s for c in " \t\"'\\"):
        s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def _unit(sections: list[tuple[str, list[str]]]) -> bytes:
    out = [f"# {HEADER}"]
    for name, lines in sections:
        out += ["", f"[{name}]", *lines]
    return ("\n".join(out) + "\n").encode()


def _systemd(settings: Settings, target: Target, extra_env: Mapping[str, str]) -> Plan:
    ps = parts(settings, target)
    env, secret_env = split_secrets(service_env(settings, target, extra_env))
    # Secrets go in a 0600 file systemd reads, never in Environment= (any user can read that
    # with `systemctl show`). A host of the multi-host layout keeps all its settings in that
    # one file: the shared ones are the same on every host (copy it, then edit the host's own).
    secrets_path = f"{settings.home}/service/{ROLES_ENV if target.roles else SECRETS_ENV}"
    if target.roles:
        env, secret_env = {}, {**env, **secret_env}
    user = target.scope == "user"
    unit_dir = (f"{target.user_home}/.config/systemd/user" if user else "/etc/systemd/system")
    units = tuple(f"bgtasks-{p.name}.service" for p in ps)
    server = "bgtasks-server.service" if ps[0].name == "server" else None
    bgtasks = bgtasks_exe(target)
    timeout = wait_timeout_s(settings)
    home = str(settings.home)
    files = []
    for i, (p, unit) in enumerate(zip(ps, units, strict=True)):
        before = list(units[:i])  # everything started earlier: stopped later
        head = [f"Description={p.description}", f"PartOf={TARGET}"]
        if server and p.name != "server":
            head += [f"PartOf={server}", f"Wants={server}"]
        if not user:
            head += ["Wants=network-online.target", "After=network-online.target"]
        head += [f"After={u}" for u in before]
        svc = ["Type=exec"]
        if not user:
            svc.append(f"User={target.user}")
        svc.append(f"WorkingDirectory={systemd_path(home)}")
        svc += [systemd_env(k, v) for k, v in env.items()]
        if secret_env:
            svc.append(f"EnvironmentFile={systemd_path(secrets_path)}")
        svc += sandbox(settings, p)
        start_timeout = 30
        if p.prepare:
            svc.append("ExecStartPre=" + systemd_command(
                (bgtasks, "service", "wait-server", "--timeout", str(timeout), "--prepare")))
            start_timeout = timeout + 60  # importing Prefect and creating the pool come on top
        svc.append("ExecStart=" + systemd_command(p.argv))
        if p.name == "server":
            svc.append("ExecStartPost=" + systemd_command((bgtasks, "service", "wait-server", "--timeout", str(timeout))))
            start_timeout = timeout + 30
        svc += [
            f"SyslogIdentifier=bgtasks-{p.name}",
            "KillMode=mixed",
            f"KillSignal={p.stop_signal}",
            f"TimeoutStartSec={start_timeout}",
            f"TimeoutStopSec={p.stop_grace_s}",
            "Restart=on-failure",
            f"RestartSec={RESTART_S}",
        ]
        files.append(ServiceFile(f"{unit_dir}/{unit}", _unit([("Unit", head), ("Service", svc)])))
    wanted_by = "default.target" if user else "multi-user.target"
    files.append(ServiceFile(f"{unit_dir}/{TARGET}", _unit([
        ("Unit", ["Description=bgtasks: Prefect server, worker, trigger daemon and REST API",
                  *[f"Wants={u}" for u in units]]),
        ("Install", [f"WantedBy={wanted_by}"]),
    ])))
    if secret_env:
        files.append(ServiceFile(secrets_path, environment_file(secret_env), 0o600))
    ctl = ("systemctl", "--user") if user else ("systemctl",)
    return Plan(
        target=target, parts=ps, units=units, files=tuple(files),
        dirs=(home, str(settings.home / "logs"), str(settings.prefect_home), str(settings.home / "service")),
        install=(Step((*ctl, "daemon-reload")), Step((*ctl, "enable", TARGET)),
                 # restart, not start: a reinstall must run the new definitions
                 Step((*ctl, "restart", TARGET))),
        # One transaction: systemd orders the stops (API, daemon, worker, server) and
        # systemctl waits for all of them (a stop of the target alone returns at once).
        uninstall=(Step((*ctl, "disable", TARGET), check=False),
                   Step((*ctl, "stop", TARGET, *units), check=False),
                   Step((*ctl, "reset-failed", TARGET, *units), check=False)),  # while still loaded
        after_remove=(Step((*ctl, "daemon-reload"), check=False),),
        status=tuple(Step((*ctl, "show", "--property=Id,LoadState,ActiveState,SubState,MainPID,NRestarts,Result",
                           unit), check=False) for unit in units),
        manager="systemctl",
    )


# --------------------------------------------------------------------------- launchd


def _launchd(settings: Settings, target: Target, extra_env: Mapping[str, str]) -> Plan:
    ps = parts(settings, target)
    env = service_env(settings, target, extra_env)
    mode = 0o600 if has_secret(env) else 0o644
    user = target.scope == "user"
    directory = f"{target.user_home}/Library/LaunchAgents" if user else "/Library/LaunchDaemons"
    domain = f"gui/{target.uid}" if user else "system"
    labels = tuple(f"{LAUNCHD_PREFIX}{p.name}" for p in ps)
    logs = settings.home / "logs"
    timeout = str(wait_timeout_s(settings))
    files, paths = [], []
    for p, label in zip(ps, labels, strict=True):
        argv = list(p.argv)
        if p.name != "server":  # launchd has no dependencies: wait for the server, then exec
            argv = [bgtasks_exe(target), "service", "run", "--wait-server", timeout,
                    *(["--prepare"] if p.prepare else []), "--", *argv]
        plist: dict[str, object] = {
            "Label": label,
            "ProgramArguments": argv,
            "EnvironmentVariables": env,
            "WorkingDirectory": str(settings.home),
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ThrottleInterval": RESTART_S,
            "ExitTimeOut": p.stop_grace_s,
            "StandardOutPath": str(logs / f"{p.name}.log"),
            "StandardErrorPath": str(logs / f"{p.name}.log"),
            "Umask": 0o077,  # the home's files are the owner's alone
        }
        if not user:
            plist["UserName"] = target.user
        path = f"{directory}/{label}.plist"
        paths.append(path)
        files.append(ServiceFile(path, plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=True), mode))
    install: list[Step] = []
    for label, path in zip(labels, paths, strict=True):
        install += [Step(("launchctl", "bootout", f"{domain}/{label}"), check=False),  # a reinstall
                    Step(("launchctl", "enable", f"{domain}/{label}")),
                    Step(("launchctl", "bootstrap", domain, path))]
    return Plan(
        target=target, parts=ps, units=labels, files=tuple(files),
        dirs=(str(settings.home), str(logs), str(settings.prefect_home)),
        install=tuple(install),
        uninstall=tuple(Step(("launchctl", "bootout", f"{domain}/{label}"), check=False)
                        for label in reversed(labels)),
        after_remove=(),
        status=tuple(Step(("launchctl", "print", f"{domain}/{label}"), check=False) for label in labels),
        log_files=tuple(str(logs / f"{p.name}.log") for p in ps),
        manager="launchctl",
    )


# --------------------------------------------------------------------------- Windows


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def task_xml(description: str, uri: str, command: str, arguments: str, working_dir: str,
             scope: Scope, user: str) -> bytes:
    """A Task Scheduler 1.2 task definition, UTF-16 with BOM, CRLF line ends."""
    task = ET.Element("Task", {"version": "1.2", "xmlns": TASK_NS})
    reg = _sub(task, "RegistrationInfo")
    _sub(reg, "Description", description)
    _sub(reg, "URI", uri)
    triggers = _sub(task, "Triggers")
    if scope == "user":
        trig = _sub(triggers, "LogonTrigger")
        _sub(trig, "Enabled", "true")
        _sub(trig, "UserId", user)
    else:
        trig = _sub(triggers, "BootTrigger")
        _sub(trig, "Enabled", "true")
    principal = _sub(_sub(task, "Principals"), "Principal", id="Author")
    _sub(principal, "UserId", user)
    _sub(principal, "LogonType", "InteractiveToken" if scope == "user" else "S4U")
    _sub(principal, "RunLevel", "LeastPrivilege")
    settings = _sub(task, "Settings")
    for tag, value in (("MultipleInstancesPolicy", "IgnoreNew"), ("DisallowStartIfOnBatteries", "false"),
                       ("StopIfGoingOnBatteries", "false"), ("AllowHardTerminate", "true"),
                       ("StartWhenAvailable", "true"), ("RunOnlyIfNetworkAvailable", "false")):
        _sub(settings, tag, value)
    idle = _sub(settings, "IdleSettings")
    _sub(idle, "StopOnIdleEnd", "false")
    _sub(idle, "RestartOnIdle", "false")
    for tag, value in (("AllowStartOnDemand", "true"), ("Enabled", "true"), ("Hidden", "false"),
                       ("RunOnlyIfIdle", "false"), ("WakeToRun", "false"),
                       ("ExecutionTimeLimit", "PT0S"), ("Priority", "7")):
        _sub(settings, tag, value)
    restart = _sub(settings, "RestartOnFailure")  # failures to start the action (the supervisor
    _sub(restart, "Interval", "PT1M")              # restarts the part itself)
    _sub(restart, "Count", "3")
    exec_ = _sub(_sub(task, "Actions", Context="Author"), "Exec")
    _sub(exec_, "Command", command)
    _sub(exec_, "Arguments", arguments)
    _sub(exec_, "WorkingDirectory", working_dir)
    ET.indent(task, "  ")
    text = '<?xml version="1.0" encoding="UTF-16"?>\n' + ET.tostring(task, encoding="unicode") + "\n"
    return b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")


def _windows(settings: Settings, target: Target, extra_env: Mapping[str, str]) -> Plan:
    ps = parts(settings, target)
    env = service_env(settings, target, extra_env)
    home = PureWindowsPath(str(settings.home))
    service_dir, logs = home / "service", home / "logs"
    env_file = service_dir / "env.json"
    pythonw = str(PureWindowsPath(target.python).with_name("pythonw.exe"))
    names = tuple(f"{TASK_FOLDER}\\{p.name}" for p in ps)
    timeout = str(wait_timeout_s(settings))
    private = 0o600 if has_secret(env) else 0o644
    files = [ServiceFile(str(env_file), (json.dumps(env, indent=2, sort_keys=True) + "\n").encode(), private)]
    xml_paths = []
    for p, name in zip(ps, names, strict=True):
        args = ["-c", CLI_BOOTSTRAP, "service", "run", "--env-file", str(env_file),
                "--log", str(logs / f"{p.name}.log"), "--restart-s", str(RESTART_S)]
        if p.name != "server":
            args += ["--wait-server", timeout, *(["--prepare"] if p.prepare else [])]
        args += ["--", *p.argv]
        path = str(service_dir / f"bgtasks-{p.name}.xml")
        xml_paths.append(path)
        files.append(ServiceFile(path, task_xml(p.description, f"\\{name}", pythonw,
                                                subprocess.list2cmdline(args), str(home), target.scope,
                                                target.user)))
    return Plan(
        target=target, parts=ps, units=names, files=tuple(files),
        dirs=(str(home), str(logs), str(PureWindowsPath(str(settings.prefect_home))), str(service_dir)),
        install=tuple([Step(("schtasks", "/Create", "/XML", x, "/TN", n, "/F")) for x, n in zip(xml_paths, names)]
                      + [Step(("schtasks", "/Run", "/TN", n)) for n in names]),
        uninstall=tuple([Step(("schtasks", "/End", "/TN", n), check=False) for n in reversed(names)]
                        + [Step(("schtasks", "/Delete", "/TN", n, "/F"), check=False) for n in reversed(names)]),
        after_remove=(),
        status=tuple(Step(("schtasks", "/Query", "/TN", n, "/FO", "CSV", "/NH"), check=False) for n in names),
        log_files=tuple(str(logs / f"{p.name}.log") for p in ps),
        manager="schtasks",
    )


def plan(settings: Settings, target: Target, extra_env: Mapping[str, str] = {}) -> Plan:
    """The files and commands of ``bgtasks service`` for ``target`` (pure, deterministic).

    Raises ``ValueError`` when a setting cannot be written into a service definition.
    """
    if target.roles and target.flavour != "linux":
        raise ValueError("--role writes systemd units (Linux) for now; on macOS and Windows run the "
                         "roles' commands (docs/scaling.md) under your own service manager")
    make = {"linux": _systemd, "macos": _launchd, "windows": _windows}[target.flavour]
    _, secret_env = split_secrets(service_env(settings, target, extra_env))
    return replace(make(settings, target, extra_env), secrets=tuple(sorted(set(secret_env.values()))))


def command_line(argv: Command, flavour: Flavour) -> str:
    """A command as the user would type it (dry runs, error messages)."""
    if flavour == "windows":
        return subprocess.list2cmdline(argv)
    import shlex

    return shlex.join(argv)


# --------------------------------------------------------------------------- status parsing


def parse_systemctl_show(text: str) -> dict[str, str]:
    """``systemctl show --property=..`` output (``Key=value`` lines) as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_launchctl_print(text: str) -> dict[str, str]:
    """The top-level ``key = value`` lines of ``launchctl print`` (state, pid, last exit code)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and " = " in line:
            key, _, value = line.strip().partition(" = ")
            if value != "{":  # a nested block (environment, endpoints...)
                out.setdefault(key, value)
    return out


def parse_schtasks_csv(text: str) -> dict[str, str]:
    """``schtasks /Query /FO CSV /NH`` for one task: its name, next run and status."""
    import csv

    for row in csv.reader(text.splitlines()):
        if len(row) >= 3:
            return {"TaskName": row[0], "Next Run Time": row[1], "Status": row[2]}
    return {}


__all__ = [
    "Flavour", "Scope", "Target", "Part", "ServiceFile", "Step", "Plan", "plan", "parts",
    "service_env", "settings_env", "has_secret", "systemd_word", "systemd_command", "systemd_env",
    "task_xml", "command_line", "bgtasks_exe", "parse_systemctl_show", "parse_launchctl_print",
    "parse_schtasks_csv", "PART_NAMES", "TARGET",
]
