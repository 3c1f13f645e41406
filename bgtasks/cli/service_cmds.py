"""``bgtasks service install|uninstall|status|logs``: the embedded stack as boot-time services.

What gets generated, and why, is in :mod:`bgtasks.service` (pure); this module looks
up the machine (Python, user, host), checks that the service manager is there, writes
the files and runs the commands. ``--dry-run`` prints every file and command and
changes nothing; ``--platform`` lets a dry run show another platform's files.

Two hidden commands are what the generated definitions call:

- ``bgtasks service wait-server [--timeout S] [--prepare]``: poll the Prefect API's
  ``/health`` until it answers (exit 1 after ``S`` seconds); with ``--prepare``, then
  create the pool, its priority queues and the control deployments, as ``bgtasks up``
  does before its worker. systemd's ``ExecStartPost=`` (server) and ``ExecStartPre=``
  (worker).
- ``bgtasks service run [--env-file F] [--log F] [--wait-server S] [--prepare]
  [--restart-s S] -- PROGRAM ARGS``: the same wait, then exec the program (launchd),
  or, with ``--restart-s``, supervise it (Windows): restart it when it exits non-zero,
  forward SIGINT/SIGTERM, and on Windows hold it in a kill-on-close job object so
  ending the task ends the part.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import cyclopts
from cyclopts import Parameter
from rich.table import Table

from bgtasks.cli import _common as cli
from bgtasks.cli._common import Output

if TYPE_CHECKING:
    from bgtasks.service import Flavour, Plan, Scope, Step
    from bgtasks.settings import Settings

service_app = cyclopts.App(
    name="service",
    help="Run bgtasks (Prefect server, worker, trigger daemon, REST API) as services that start on boot "
         "and restart on failure: systemd, launchd or Task Scheduler.",
)

UserFlag = Annotated[bool, Parameter(negative=(), help="Services of the current user (default unless root).")]
SystemFlag = Annotated[bool, Parameter(
    negative=(), help="System-wide services started at boot, run as the installing user (default as root; "
                      "needs root/admin).")]
DryRun = Annotated[bool, Parameter(negative=(), help="Print the files and commands; change nothing.")]
PlatformOpt = Annotated[Literal["linux", "macos", "windows"] | None, Parameter(
    help="Service manager flavour: systemd, launchd or Task Scheduler (default: this machine's; "
         "another one only with --dry-run).")]
RunAs = Annotated[str | None, Parameter(
    help="--system: the user the services run as (default: sudo's SUDO_USER, else the current user).")]
PartName = Literal["server", "worker", "daemon", "api"]
RoleOpt = Annotated[list[Literal["server-api", "server-services", "worker", "daemon", "api"]] | None, Parameter(
    name="--role", help="A role of the multi-host layout on this host (repeatable): server-api, server-services, "
                        "worker, daemon, api. Settings in one 0600 file; systemd only (docs/scaling.md).")]

#: Where systemd, when it is PID 1, says so (sd_booted(3)).
SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")


def current_platform() -> Flavour:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform == "win32":
        return "windows"
    cli.fail(f"`bgtasks service` supports Linux (systemd), macOS (launchd) and Windows; not {sys.platform}")
    raise AssertionError  # not reached


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _scope(user: bool, system: bool) -> Scope:
    if user and system:
        cli.fail("--user and --system exclude each other: choose one")
    if user:
        return "user"
    if system:
        return "system"
    return "system" if _is_root() else "user"


def _home_of(user: str) -> str:
    try:
        import pwd

        return pwd.getpwnam(user).pw_dir
    except (ImportError, KeyError):
        return str(Path.home())


#: Shown instead of a secret the dry run would generate at install.
PLACEHOLDER_SECRET = "<generated at install>"


def _plan(flavour: Flavour | None, scope: Scope, run_as: str | None = None,
          create_secret: bool = False, roles: list[str] | None = None) -> tuple[Plan, Settings]:
    """This machine's inputs to :func:`bgtasks.service.plan`.

    ``create_secret``: generate the server's auth string in the home if it has none (an
    install); otherwise a placeholder stands in for it (dry runs, status).
    """
    from pydantic import SecretStr

    from bgtasks.service import Target, plan

    flavour = flavour or current_platform()
    s = cli.settings().model_copy(deep=True)
    me = getpass.getuser()
    user = run_as or (os.environ.get("SUDO_USER") if scope == "system" and _is_root() else None) or me
    if scope == "system" and flavour != "windows" and user == "root":
        cli.fail("--system: the services would run as root. Create a user for them (sudo useradd --system "
                 "--create-home --shell /usr/sbin/nologin bgtasks) and pass --run-as bgtasks")
    user_home = _home_of(user) if user != me else str(Path.home())
    if user != me and "BGTASKS_HOME" not in os.environ:
        # `sudo bgtasks service install --system`: the home is the run-as user's, not root's.
        s.home = Path(user_home) / ".bgtasks"
        if "BGTASKS_SERVER_AUTH_STRING" not in os.environ:
            s.server.auth_string = None  # the run-as user's home has its own
            s.load_auth_string()
    if roles:
        from bgtasks.parts import ROLES, role_problems

        roles = [r for r in ROLES if r in roles]  # start order, each once
        for problem in role_problems(s, tuple(roles)):
            cli.fail(f"--role {' '.join(roles)}: {problem}")
    elif s.server.auth_string is None and not s.server.api_url:
        if create_secret:
            s.ensure_auth_string()
            for path in (s.home, s.auth_string_file.parent, s.auth_string_file):
                _chown(path, user)
        else:
            s.server.auth_string = SecretStr(PLACEHOLDER_SECRET)
    target = Target(
        flavour=flavour, scope=scope, python=str(Path(sys.executable).absolute()), user=user,
        user_home=user_home, hostname=s.host_name if roles else socket.gethostname().split(".")[0],
        uid=os.getuid() if hasattr(os, "getuid") else 0, roles=tuple(roles or ()),
    )
    extra = {k: v for k, v in os.environ.items() if k.startswith(("BGTASKS_", "PREFECT_"))}
    try:
        return plan(s, target, extra), s
    except ValueError as exc:
        cli.fail(f"Cannot write the service definitions: {exc}")
        raise AssertionError from exc  # not reached


def _user_bus() -> bool:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return True
    return bool(runtime) and ((Path(runtime) / "bus").exists() or (Path(runtime) / "systemd" / "private").exists())


def _require_manager(p: Plan, verb: str) -> None:
    """Refuse, in one line with the way out, when this machine cannot run ``p``."""
    from bgtasks.service import bgtasks_exe

    t = p.target
    here = current_platform()
    if t.flavour != here:
        cli.fail(f"--platform {t.flavour}: this machine is {here}; another platform's files can only be "
                 f"shown: bgtasks service {verb} --platform {t.flavour} --dry-run")
    what = {"linux": "systemd", "macos": "launchd", "windows": "Task Scheduler"}[t.flavour]
    if shutil.which(p.manager) is None:
        cli.fail(f"{p.manager} not found: `bgtasks service {verb}` needs {what}, which this machine does not have; "
                 "run the stack in a terminal with `bgtasks up`, or see the files with --dry-run")
    if t.flavour == "linux":
        if not SYSTEMD_RUNTIME_DIR.is_dir():
            cli.fail(f"systemd is not running on this machine ({SYSTEMD_RUNTIME_DIR} is missing: a container or "
                     "another init?); run the stack with `bgtasks up`, or see the units with --dry-run")
        if t.scope == "user" and not _user_bus():
            cli.fail("no user service manager for `systemctl --user` (no XDG_RUNTIME_DIR/bus: not a login "
                     "session); log in (or `loginctl enable-linger USER`) and retry, or use --system as root")
    if t.scope == "system" and t.flavour != "windows" and not _is_root():
        cli.fail(f"--system installs system-wide services: run it as root (sudo {Path(sys.argv[0]).name} "
                 f"service {verb} --system)")
    if verb == "install" and not Path(bgtasks_exe(t)).exists():
        cli.fail(f"{bgtasks_exe(t)} not found: install bgtasks into this Python's environment "
                 f"({t.python}) with pip so the services can run its console script")


def _run_steps(steps: tuple[Step, ...], flavour: Flavour) -> None:
    """Run ``steps``; a failing checked step ends the command in one line. Unchecked steps are
    best effort by design (booting out what is not loaded, resetting what did not fail)."""
    from bgtasks.service import command_line

    for step in steps:
        try:
            r = subprocess.run(step.argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
            code, out = r.returncode, (r.stderr.strip() or r.stdout.strip())
        except OSError as exc:
            code, out = -1, str(exc)
        if code != 0 and step.check:
            line = out.splitlines()[-1] if out else "no output"
            cli.fail(f"`{command_line(step.argv, flavour)}` failed (exit {code}): {line}")


def _print_plan(p: Plan, sections: list[tuple[str, Any]], output: str) -> None:
    """A dry run: every file with its content (secrets masked), every command, in order."""
    from bgtasks.service import command_line

    if output == "json":
        doc: dict[str, Any] = {"platform": p.target.flavour, "scope": p.target.scope}
        for title, body in sections:
            if title == "files":
                doc["files"] = [{"path": f.path, "mode": f"{f.mode:04o}", "content": p.masked(f)} for f in body]
            elif title == "remove":
                doc["remove"] = [f.path for f in body]
            else:
                doc[title] = [list(s.argv) for s in body]
        cli.print_json(doc)
        return
    for title, body in sections:
        if title == "files":
            for f in body:
                print(f"# {f.path} (mode {f.mode:04o})")
                text = p.masked(f)
                print(text.replace("\r\n", "\n"), end="" if text.endswith("\n") else "\n")
                print()
        elif title == "remove":
            print("# Files to remove:")
            for f in body:
                print(f.path)
            print()
        else:
            print(f"# Commands ({title}):")
            for s in body:
                print(command_line(s.argv, p.target.flavour))
            print()


def _chown(path: Path, user: str) -> None:
    if _is_root() and user != "root":
        try:
            shutil.chown(path, user)
        except (LookupError, OSError):
            pass


def _write(p: Plan) -> None:
    for d in p.dirs:
        path = Path(d)
        missing = [q for q in (path, *path.parents) if not q.exists()]
        path.mkdir(parents=True, exist_ok=True)
        for q in missing:
            _chown(q, p.target.user)
    for f in p.files:
        path = Path(f.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        # The final mode from the first byte: created 0600, widened only once written.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(f.content)
            if os.name == "posix":
                os.fchmod(fh.fileno(), f.mode)
        os.replace(tmp, path)


@service_app.command
def install(
    *,
    user: UserFlag = False,
    system: SystemFlag = False,
    dry_run: DryRun = False,
    platform: PlatformOpt = None,
    run_as: RunAs = None,
    role: RoleOpt = None,
    output: Output = "table",
) -> None:
    """Install the stack as services that start on boot (or login) and restart on failure, and start them."""
    scope = _scope(user, system)
    p, s = _plan(platform, scope, run_as, roles=role)
    if dry_run:
        _print_plan(p, [("files", p.files), ("install", p.install)], output)
        return
    _require_manager(p, "install")
    p, s = _plan(platform, scope, run_as, create_secret=True, roles=role)  # the server's auth string, made now
    _write(p)
    _run_steps(p.install, p.target.flavour)
    kind = {"linux": "systemd units", "macos": "launchd jobs", "windows": "scheduled tasks"}[p.target.flavour]
    cli.console.print(f"[green]bgtasks installed[/] as {scope} {kind} ({', '.join(p.units)}) and started.")
    if p.target.flavour == "linux" and scope == "user":
        cli.console.print(f"[dim]User units start at login; to start them at boot: "
                          f"sudo loginctl enable-linger {p.target.user}[/]")
    cli.console.print(f"  Prefect UI: {s.ui_url}   REST API: http://{s.api.host}:{s.api.port}\n"
                      f"Check it: bgtasks service status --{scope}   Logs: bgtasks service logs --{scope} -f")


@service_app.command
def uninstall(
    *,
    user: UserFlag = False,
    system: SystemFlag = False,
    dry_run: DryRun = False,
    platform: PlatformOpt = None,
    run_as: RunAs = None,
    role: RoleOpt = None,
    output: Output = "table",
) -> None:
    """Stop the services (API, daemon and worker before the server), disable and remove them."""
    scope = _scope(user, system)
    p, _ = _plan(platform, scope, run_as, roles=role)
    if dry_run:
        _print_plan(p, [("stop", p.uninstall), ("remove", p.files), ("after", p.after_remove)], output)
        return
    present = [f for f in p.files if Path(f.path).exists()]
    if not present:
        cli.console.print(f"bgtasks is not installed as {scope} services here: nothing to do.")
        return
    _require_manager(p, "uninstall")
    _run_steps(p.uninstall, p.target.flavour)
    for f in present:
        Path(f.path).unlink(missing_ok=True)
    _run_steps(p.after_remove, p.target.flavour)
    cli.console.print(f"bgtasks services stopped and removed ({', '.join(p.units)}). "
                      "Its home and data stay in place.")


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _part_state(p: Plan, step: Step) -> dict[str, Any]:
    from bgtasks.service import (
        parse_launchctl_print,
        parse_schtasks_csv,
        parse_systemctl_show,
    )

    r = subprocess.run(step.argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    flavour = p.target.flavour
    if flavour == "linux":
        info = parse_systemctl_show(r.stdout)
        pid = int(info.get("MainPID", "0") or 0)
        return {"state": f"{info.get('ActiveState', 'unknown')} ({info.get('SubState', '?')})",
                "running": info.get("ActiveState") == "active", "pid": pid or None,
                "detail": f"{info.get('NRestarts', '?')} restarts"
                          + ("" if info.get("Result", "success") == "success" else f", {info['Result']}")}
    if flavour == "macos":
        if r.returncode != 0:
            return {"state": "not loaded", "running": False, "pid": None, "detail": ""}
        info = parse_launchctl_print(r.stdout)
        pid = info.get("pid")
        return {"state": info.get("state", "unknown"), "running": info.get("state") == "running",
                "pid": int(pid) if pid and pid.isdigit() else None,
                "detail": f"last exit code {info.get('last exit code', '-')}"}
    info = parse_schtasks_csv(r.stdout) if r.returncode == 0 else {}
    status = info.get("Status", "not registered")
    return {"state": status, "running": status == "Running", "pid": None, "detail": ""}


@service_app.command
def status(*, user: UserFlag = False, system: SystemFlag = False, role: RoleOpt = None,
           output: Output = "table") -> int:
    """Each service's state, and whether the Prefect API and the REST API answer. Exit 1 unless all run."""
    scope = _scope(user, system)
    p, s = _plan(None, scope, roles=role)
    if not any(Path(f.path).exists() for f in p.files):
        cli.fail(f"bgtasks is not installed as {scope} services here: bgtasks service install --{scope}")
    if shutil.which(p.manager) is None:
        cli.fail(f"{p.manager} not found: cannot query the services")
    rows = [{"part": part.name, "unit": unit, **_part_state(p, step)}
            for part, unit, step in zip(p.parts, p.units, p.status, strict=True)]
    api_url = f"http://{s.api.host}:{s.api.port}"
    health = {"prefect_api": {"url": s.api_url, "healthy": _http_ok(f"{s.api_url}/health")},
              "rest_api": {"url": api_url, "healthy": _http_ok(f"{api_url}/health")}}
    if output == "json":
        cli.print_json({"platform": p.target.flavour, "scope": scope, "parts": rows, **health})
    else:
        table = Table("PART", "UNIT", "STATE", "PID", "DETAIL")
        table.columns[1].no_wrap = True
        for r in rows:
            color = "green" if r["running"] else "red"
            table.add_row(r["part"], r["unit"], f"[{color}]{r['state']}[/]", str(r["pid"] or "-"), r["detail"])
        cli.console.print(table)
        for name, h in (("Prefect API", health["prefect_api"]), ("REST API", health["rest_api"])):
            mark = "[green]healthy[/]" if h["healthy"] else "[red]not answering[/]"
            cli.console.print(f"{name} {h['url']}: {mark}")
        if p.target.flavour == "linux":
            ctl = "systemctl --user" if scope == "user" else "systemctl"
            cli.console.print(f"[dim]Details: {ctl} status 'bgtasks-*'   Logs: bgtasks service logs --{scope}[/]")
    return 0 if all(r["running"] for r in rows) else 1


def _tail_lines(path: Path, lines: int) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``path`` and its size (read backwards in blocks)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        data, pos = b"", size
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:] if lines else [], size


@service_app.command
def logs(
    *,
    user: UserFlag = False,
    system: SystemFlag = False,
    part: Annotated[list[PartName] | None, Parameter(help="Only these parts (repeatable).")] = None,
    lines: Annotated[int, Parameter(name=["--lines", "-n"], help="Lines of history to show.")] = 50,
    follow: Annotated[bool, Parameter(name=["--follow", "-f"], negative=(), help="Keep printing new lines.")] = False,
) -> int:
    """The services' logs: the journal (systemd) or logs/PART.log in the bgtasks home (launchd, Task Scheduler)."""
    scope = _scope(user, system)
    p, _ = _plan(None, scope)
    chosen = tuple(part or ())
    cmd = p.logs_command(lines, follow, chosen)
    if cmd is not None:
        if shutil.which(cmd[0]) is None:
            cli.fail(f"{cmd[0]} not found: the systemd journal cannot be read here")
        try:
            return subprocess.call(cmd)
        except KeyboardInterrupt:
            return 0
    files = [Path(f) for pt, f in zip(p.parts, p.log_files, strict=True) if not chosen or pt.name in chosen]
    sizes = {}
    for path in files:
        if not path.exists():
            cli.err_console.print(f"[dim]{path}: no log yet[/]")
            continue
        tail, sizes[path] = _tail_lines(path, lines)
        print(f"==> {path} <==")
        for line in tail:
            print(line)
    try:
        while follow:
            time.sleep(0.5)
            for path in files:
                size = path.stat().st_size if path.exists() else 0
                if size < sizes.get(path, 0):
                    sizes[path] = 0  # truncated or rotated
                if size > sizes.get(path, 0):
                    with open(path, "rb") as f:
                        f.seek(sizes.get(path, 0))
                        chunk = f.read(size - sizes.get(path, 0))
                    sizes[path] = size
                    for line in chunk.decode("utf-8", errors="replace").splitlines():
                        print(f"{path.stem}: {line}", flush=True)
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- hidden: what the services call


def wait_for_server(api_url: str, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll ``{api_url}/health`` until it answers 200 or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if _http_ok(f"{api_url}/health"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


@service_app.command(name="wait-server", show=False)
def wait_server(
    *,
    timeout: Annotated[float, Parameter(help="Seconds to wait for /health.")] = 120.0,
    prepare: Annotated[bool, Parameter(negative=(), help="Then create the pool, queues and controls.")] = False,
) -> None:
    """Wait until the Prefect API is healthy (systemd ExecStartPre/ExecStartPost)."""
    s = cli.settings()
    if not wait_for_server(s.api_url, timeout):
        cli.fail(f"The Prefect API at {s.api_url} was not healthy after {timeout:g}s")
    if prepare:
        from bgtasks.stack import prepare_server

        asyncio.run(prepare_server(s))


def _redirect_output(log: Path) -> None:
    """Send this process's stdout/stderr (and an exec'd program's) to ``log``, appending."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for std in (1, 2):
        os.dup2(fd, std)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115


def _kill_on_close_job() -> Any:  # pragma: no cover - Windows only
    """A Windows job object whose processes die when its last handle (ours) closes."""
    import ctypes
    from ctypes import wintypes

    class IoCounters(ctypes.Structure):
        _fields_ = [(n, ctypes.c_ulonglong) for n in ("ReadOperationCount", "WriteOperationCount",
                                                       "OtherOperationCount", "ReadTransferCount",
                                                       "WriteTransferCount", "OtherTransferCount")]

    class BasicLimits(ctypes.Structure):
        _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                    ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                    ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                    ("SchedulingClass", wintypes.DWORD)]

    class ExtendedLimits(ctypes.Structure):
        _fields_ = [("BasicLimitInformation", BasicLimits), ("IoInfo", IoCounters),
                    ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    job = kernel32.CreateJobObjectW(None, None)
    info = ExtendedLimits()
    info.BasicLimitInformation.LimitFlags = 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    kernel32.SetInformationJobObject(wintypes.HANDLE(job), 9,  # JobObjectExtendedLimitInformation
                                     ctypes.byref(info), ctypes.sizeof(info))
    return lambda proc: kernel32.AssignProcessToJobObject(wintypes.HANDLE(job), wintypes.HANDLE(int(proc._handle)))


def supervise(argv: list[str], restart_s: float, say: Any, stdout: Any = None) -> int:
    """Run ``argv`` until it exits 0 or we are told to stop; restart it ``restart_s`` after a failure.

    SIGINT/SIGTERM are forwarded to the child once and end the loop (exit 0 when the
    child then stops). On Windows the child is held in a kill-on-close job object.
    """
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signum)
            except (OSError, ValueError):  # Windows: SIGINT cannot be sent to a child
                child.terminate()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    assign = _kill_on_close_job() if sys.platform == "win32" else None
    flags = 0x08000000 if sys.platform == "win32" else 0  # CREATE_NO_WINDOW
    while True:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                                 stderr=subprocess.STDOUT if stdout is not None else None, creationflags=flags)
        if assign is not None:
            assign(child)
        code = child.wait()
        if stop.is_set():
            return 0
        if code == 0:
            return 0
        say(f"bgtasks service: {argv[0]} exited with {code}; restarting in {restart_s:g}s")
        if stop.wait(restart_s):
            return 0


@service_app.command(name="run", show=False)
def run_part(
    *argv: str,
    env_file: Path | None = None,
    log: Path | None = None,
    wait_server: float | None = None,
    prepare: bool = False,
    restart_s: float | None = None,
) -> int:
    """Wait for the server, then exec (launchd) or supervise (Windows) ``PROGRAM ARGS`` after ``--``."""
    from bgtasks.settings import load_settings

    if not argv:
        cli.fail("Nothing to run: bgtasks service run [OPTIONS] -- PROGRAM ARGS")
    if log is not None:
        _redirect_output(log)

    def say(msg: str) -> None:
        print(msg, flush=True)

    if env_file is not None:
        os.environ.update(json.loads(env_file.read_text(encoding="utf-8")))
    # As `bgtasks up` does: the worker runs flows with `python -m prefect.engine`.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    s = load_settings()
    if wait_server is not None and not wait_for_server(s.api_url, wait_server):
        say(f"bgtasks service: the Prefect API at {s.api_url} was not healthy after {wait_server:g}s")
        return 1
    if prepare:
        from bgtasks.stack import prepare_server

        asyncio.run(prepare_server(s))
    if restart_s is not None:
        out = open(log, "ab") if log is not None else None  # noqa: SIM115
        return supervise(list(argv), restart_s, say, stdout=out)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execvp(argv[0], list(argv))
    return subprocess.call(list(argv))


__all__ = ["service_app", "supervise", "wait_for_server", "current_platform"]
