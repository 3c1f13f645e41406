"""``bgtasks up``: the embedded stack in the foreground."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from cyclopts import Parameter
from rich.markup import escape

from bgtasks.cli import _common as cli
from bgtasks.home import open_private, write_private
from bgtasks.parts import STOP_GRACE_S
from bgtasks.settings import STACK_ENV_FILE, Settings, panel_url


def up(
    *,
    port: Annotated[int | None, Parameter(help="Port of the Prefect server and UI (default 4200).")] = None,
    api_port: Annotated[int | None, Parameter(help="Port of bgtasks' REST API (default 4300).")] = None,
    database: Annotated[str | None, Parameter(help="Prefect database URL (default: SQLite under the bgtasks home).")] = None,
    push: Annotated[Literal["settings", "emulator"], Parameter(
        help="Where device pushes go: the BGTASKS_PUSH_* settings (FCM and APNs), or `emulator`: the push "
             "emulator with simulated phones, started beside the stack (`bgtasks device simulate`).")] = "settings",
) -> int:
    """Start the Prefect server + UI, a worker of the background-tasks pool, the trigger daemon and the
    REST API; Ctrl-C stops them."""
    from bgtasks.installed import shadowed
    from bgtasks.settings import load_settings

    for problem in shadowed():  # before anything imports a room that is not bgtasks'
        cli.fail(problem)
    # The flags are settings: put them in the environment, so every part reads the same.
    for key, value in (("BGTASKS_SERVER_PORT", port), ("BGTASKS_SERVER_DATABASE_URL", database),
                       ("BGTASKS_API_PORT", api_port)):
        if value is not None:
            os.environ[key] = str(value)
    s = load_settings()
    for problem in exposure_problems(s):
        cli.fail(problem)
    s.ensure_auth_string()  # generated on the first start; the server and every part share it
    for key, value in s.prefect_env().items():
        os.environ[key] = value  # `up` owns these: its children must agree with it
    from bgtasks.prefect_seam import (
        require,  # imports Prefect: after its environment is in place
    )

    # An incompatible Prefect stops here, naming the internal, before anything starts.
    require("client", *(("worker", "child") if s.worker.type == "bgtasks-warm" else ()),
            *(() if s.server.api_url else ("server",)))
    cli.use_settings(s)

    from bgtasks.stack import Stack, StackError

    emulator = start_push_emulator(s) if push == "emulator" else None
    stack = Stack(s, api=lambda name, log_path: ApiInProcess(name, log_path, s))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        with cli.console.status("Starting bgtasks...") as status:
            stack.start(progress=lambda msg: status.update(f"bgtasks: {msg}..."))
    except StackError as exc:
        if emulator is not None:
            stop_push_emulator(s, emulator)
        cli.fail(f"{exc}. See the logs in {s.home / 'logs'}.")
    for warning in exposure_warnings(s):
        cli.err_console.print(f"[yellow]{escape(warning)}[/]")
    cli.console.print(
        f"[green]bgtasks is up[/] in {time.monotonic() - started:.1f}s.\n"
        f"  Prefect UI:  [bold]{s.ui_url}[/] ({ui_login_hint(s)})\n"
        f"  Prefect API: {s.api_url}\n"
        f"  Task panel:  [bold]{panel_url(s)}[/] (`bgtasks ui --open` opens it logged in)\n"
        f"  REST API:    {stack.api_url} (OpenAPI at /docs; "
        + ("no authentication" if s.api.auth == "none" else "tokens from `bgtasks token create NAME`") + ")\n"
        f"  Work pool:   {s.worker.pool} (queues high, normal, low), {s.worker.type} worker, limit {s.worker.limit}\n"
        f"  Triggers:    trigger daemon running (`bgtasks daemon status`)\n"
        + (f"  Push:        emulator (FCM {os.environ['BGTASKS_PUSH_FCM_URL']}); simulated phones: "
           "`bgtasks device simulate --platform android`\n" if emulator is not None else "")
        + f"  Home:        {s.home}\n"
        "Create a task:  bgtasks task create demo --every 1m\n"
        "Press Ctrl-C to stop."
    )
    code = 0
    while not stop.wait(1.0):
        dead = stack.dead_part()
        if dead is not None:
            cli.err_console.print(f"[red]The {dead.name} exited (log: {dead.log_path}); stopping.[/]")
            code = 1
            break
    with cli.console.status("Stopping bgtasks..."):
        stack.stop()
        if emulator is not None:
            stop_push_emulator(s, emulator)
    cli.console.print("bgtasks stopped.")
    return code


def start_push_emulator(s: Settings) -> Any:
    """The push emulator and its phones in this process (``up --push emulator``): the stack's
    parts inherit the settings that send their pushes there."""
    from mobile_push.emulator.control import EmulatorService
    from mobile_push.emulator.credentials import StoreCredentials

    from bgtasks.cli.emulator_cmds import APNS_PORT, APNS_SANDBOX_PORT, CONTROL_PORT, FCM_PORT

    api_url = f"http://{s.api.host}:{s.api.port}"
    ports = (FCM_PORT, APNS_PORT, APNS_SANDBOX_PORT, CONTROL_PORT)
    if os.environ.get("BGTASKS_EMULATOR_PORTS"):  # FCM,APNs,APNs sandbox,control
        try:
            ports = tuple(int(p) for p in os.environ["BGTASKS_EMULATOR_PORTS"].split(","))  # type: ignore[assignment]
            if len(ports) != 4 or not all(0 <= p <= 65535 for p in ports):
                raise ValueError
        except ValueError:
            cli.fail("BGTASKS_EMULATOR_PORTS: four ports, comma-separated (FCM, APNs, APNs sandbox, control)")
    try:
        service = EmulatorService(s.home / "emulator", api_url, StoreCredentials(s.store_url, s.api.auth != "none"),
                                  fcm_port=ports[0], apns_port=ports[1], apns_sandbox_port=ports[2],
                                  control_port=ports[3]).start()
    except OSError as exc:  # a port in use
        cli.fail(f"the push emulator could not start: {exc}")
    env = service.emulator.settings_env()
    env.setdefault("BGTASKS_PUSH_PUBLIC_URL", os.environ.get("BGTASKS_PUSH_PUBLIC_URL", api_url))
    os.environ.update(env)
    # Commands in other terminals (`bgtasks task create --device-label ...`) take these too.
    write_private(s.home / STACK_ENV_FILE, json.dumps({"pid": os.getpid(), "env": env}).encode())
    return service


def stop_push_emulator(s: Settings, service: Any) -> None:
    service.stop()
    (s.home / STACK_ENV_FILE).unlink(missing_ok=True)


def ui_login_hint(s: Settings) -> str:
    if s.server.api_url:
        return "the external server's own login"
    return f"log in with the auth string in {s.auth_string_file}; `bgtasks ui` prints it"


def exposure_problems(s: Settings) -> list[str]:
    """Settings that would open a door to the network: refused."""
    from bgtasks.settings import is_loopback

    out = []
    if s.api.auth == "none" and not is_loopback(s.api.host):
        out.append(f"BGTASKS_API_HOST={s.api.host}: BGTASKS_API_AUTH=none is accepted only on loopback "
                   "(127.0.0.1); use tokens (`bgtasks token create`) to serve other hosts")
    return out


def exposure_warnings(s: Settings) -> list[str]:
    """Doors open to the network over plain HTTP: allowed (they need a key) but said."""
    from bgtasks.settings import is_loopback

    out = []
    if not s.server.api_url and not is_loopback(s.server.host):
        out.append(f"The Prefect server listens on {s.server.host} over plain HTTP: its auth string crosses the "
                   "network in clear. Put TLS in front of it (docs/scaling.md).")
    if not is_loopback(s.api.host):
        out.append(f"The REST API listens on {s.api.host} over plain HTTP: tokens cross the network in clear. "
                   "Put TLS in front of it (docs/scaling.md).")
    return out


def ui(*,
       secret: Annotated[bool, Parameter(
           help="Print the Prefect UI's auth string itself (to this terminal only).")] = False,
       open_browser: Annotated[bool, Parameter(
           name="--open", help="Open the task panel in a browser, logged in with a token minted for it.")] = False,
       link: Annotated[bool, Parameter(
           help="Print the panel's login link (it holds a token: this terminal only).")] = False,
       prefect: Annotated[bool, Parameter(help="With --open: open the Prefect UI instead.")] = False) -> None:
    """Where the task panel and the Prefect UI are, and how to log in to each."""
    s = cli.settings()
    if secret:
        if s.server.auth_string is None:
            cli.fail("no auth string is configured for this Prefect API (BGTASKS_SERVER_AUTH_STRING)")
        print(s.server.auth_string.get_secret_value())
        return
    panel = panel_url(s)
    if open_browser and prefect:
        import webbrowser

        webbrowser.open(s.ui_url)
        return
    if open_browser or link:
        url = panel if s.api.auth == "none" else f"{panel}#token={panel_token()}"
        if link:
            print(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        return
    cli.console.print(f"Task panel: {panel} (log in with an API token; `bgtasks ui --open` opens it logged in)\n"
                      f"Prefect UI: {s.ui_url}\nLog in: {escape(ui_login_hint(s))}.")


def panel_token() -> str:
    """A token for the panel (tasks:read, tasks:write); the one minted before it is revoked,
    so at most one such token lives."""
    from bgtasks.auth import PANEL_TOKEN_NAME, Scope, TokenStore
    from bgtasks.cli._store import with_store

    async def mint(store: Any) -> str:
        tokens = TokenStore(store)
        for old in await tokens.list():
            if old.name == PANEL_TOKEN_NAME and old.revoked_at is None:
                await tokens.revoke(old.id)
        _, secret = await tokens.create(PANEL_TOKEN_NAME, frozenset({Scope.TASKS_READ, Scope.TASKS_WRITE}))
        return secret

    return with_store(mint)


def env(*, shell: bool = True) -> None:
    """Print the Prefect environment of this bgtasks (for `prefect deploy`, `prefect worker start`)."""
    s = cli.settings()
    for key, value in sorted(s.prefect_env().items()):
        print(f"export {key}={value!s}" if shell else f"{key}={value}")


def api(*, host: str | None = None, port: int | None = None) -> int:
    """Serve bgtasks' REST API (the spec's JSON shapes) against the Prefect API."""
    from bgtasks.home import private_umask

    s = cli.settings()
    s.api.host = host or s.api.host
    s.api.port = port or s.api.port
    host, port = s.api.host, s.api.port
    for problem in exposure_problems(s):
        cli.fail(problem)
    private_umask()
    import uvicorn

    from bgtasks.api import create_app

    auth = "no authentication (loopback only)" if s.api.auth == "none" else "bearer tokens"
    cli.console.print(f"bgtasks API on http://{host}:{port} (OpenAPI: /docs, {auth}), Prefect API {s.api_url}")
    uvicorn.run(create_app(s), host=host, port=port, log_level="warning")
    return 0


class ApiInProcess:
    """bgtasks' REST API served by a thread of ``bgtasks up`` itself, instead of a process of its own.

    ``bgtasks up`` has imported Prefect's client already (it prepares the pool): a separate API
    process held about 120 MiB at rest for the same imports (docs/performance.md). Its log is
    still ``<home>/logs/api.log``; the process's environment is the stack's own (``up`` put
    the Prefect settings in it), as the separate process's was.
    """

    #: The loggers whose records go to its log file instead of `bgtasks up`'s terminal.
    LOGGERS = ("uvicorn", "bgtasks.api")

    def __init__(self, name: str, log_path: Path, settings: Settings) -> None:
        self.name = name
        self.log_path = log_path
        self.settings = settings
        self.thread: threading.Thread | None = None
        self._server: object = None
        self._handler: logging.Handler | None = None

    @property
    def pid(self) -> int | None:
        return os.getpid() if self.thread is not None else None

    @property
    def started(self) -> bool:
        return self.thread is not None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, env: dict[str, str], cwd: Path) -> None:
        import uvicorn

        from bgtasks.api import create_app

        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(open_private(self.log_path))  # 0600 before the handler opens it
        self._handler = logging.FileHandler(self.log_path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._handler)
            logger.propagate = False  # not into the terminal `bgtasks up` draws in
        config = uvicorn.Config(create_app(self.settings), host=self.settings.api.host, port=self.settings.api.port,
                                log_level="warning", log_config=None,
                                # open event streams (/tasks/events) would hold a graceful stop forever
                                timeout_graceful_shutdown=max(1, STOP_GRACE_S["api"] - 2))
        server = uvicorn.Server(config)
        self._server = server
        self.thread = threading.Thread(target=server.run, name="bgtasks-api", daemon=True)
        self.thread.start()

    def stop(self, signals: tuple[signal.Signals, ...], grace_s: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (uvicorn's graceful exit), then go on."""
        if self.thread is None:
            return
        self._server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(timeout=grace_s if grace_s is not None else STOP_GRACE_S["api"])
        if self._handler is not None:
            for name in self.LOGGERS:
                logging.getLogger(name).removeHandler(self._handler)
            self._handler.close()
            self._handler = None
