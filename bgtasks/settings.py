"""One settings tree for bgtasks, read once at the entry point and passed down.

Every component has its own pydantic-settings class whose environment prefix
follows its place in the tree (``BGTASKS_SERVER_PORT``, ``BGTASKS_WORKER_LIMIT``).
Nothing here reads the environment at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_POOL = "background-tasks"
#: Where the generated auth string of the embedded Prefect server is kept (under the home).
AUTH_STRING_FILE = Path("secrets") / "prefect-auth-string"


#: The URL schemes prefect-redis connects with.
REDIS_SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel")


class ServerSettings(BaseSettings):
    """The Prefect server bgtasks starts (or talks to)."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_SERVER_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the embedded Prefect server binds.")
    port: int = Field(4200, ge=1, le=65535, description="Port of the Prefect server and UI.")
    database_url: str | None = Field(
        None,
        description="Prefect's database URL (sqlite+aiosqlite:// or postgresql+asyncpg://); "
        "default: a SQLite file under the bgtasks home.",
    )
    api_url: str | None = Field(
        None,
        description="Use an existing Prefect API instead of the embedded server "
        "(e.g. http://prefect.internal:4200/api).",
    )
    redis_url: str | None = Field(
        None,
        description="Redis of a multi-server Prefect (redis:// or rediss://): its messaging, event "
        "ordering, concurrency leases and background-task queue (prefect-redis, docs/scaling.md). Every "
        "Prefect server and services process of one cluster needs the same one; PostgreSQL only.",
    )
    start_timeout_s: float = Field(
        120.0, gt=0, le=900, description="How long `bgtasks up` waits for the server to be healthy."
    )
    auth_string: SecretStr | None = Field(
        None,
        description="The Prefect API's auth string (HTTP basic auth; the UI asks for it). Default: the "
        "embedded server's, generated on first start into <home>/secrets/prefect-auth-string (mode 0600). "
        "With api_url: the external server's, if it has one.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the embedded server answers to besides loopback and its bind address "
        "(JSON list; an IP network such as 10.0.0.0/8 allows its addresses); any other Host header is "
        "refused (DNS rebinding).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed besides the UI's own (e.g. https://prefect.example.com behind "
        "a TLS proxy; JSON list).",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in REDIS_SCHEMES:
            raise ValueError(f"must be a {', '.join(s + '://' for s in REDIS_SCHEMES)} URL")
        return value

    @model_validator(mode="after")
    def _redis_needs_postgres(self) -> ServerSettings:
        if self.redis_url and not self.api_url and self.on_sqlite:
            raise ValueError("BGTASKS_SERVER_REDIS_URL is for Prefect servers on PostgreSQL "
                             "(BGTASKS_SERVER_DATABASE_URL); SQLite serves one server alone")
        return self

    @property
    def on_sqlite(self) -> bool:
        """The embedded server on SQLite (its default); False with an external ``api_url``,
        whose database is not known here."""
        return not self.api_url and (not self.database_url or self.database_url.startswith("sqlite"))


class WorkerSettings(BaseSettings):
    """The worker of the background-tasks pool."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_WORKER_", extra="ignore")

    pool: str = Field(DEFAULT_POOL, min_length=1, description="Work pool name.")
    type: str = Field(
        "bgtasks-warm",
        pattern=r"^(bgtasks-warm|process)$",
        description="Worker type: bgtasks' warm worker, or Prefect's stock process worker.",
    )
    limit: int = Field(
        4, ge=1, le=64, description="Flow runs one worker executes at once (bounded: SQLite locks)."
    )
    query_seconds: float = Field(
        10.0, gt=0, le=60,
        description="How often the worker polls for due runs (the warm worker is also told by events).",
    )
    prefetch_seconds: float = Field(
        2.0, ge=0, le=60, description="How far ahead of its time a run may be picked up."
    )
    misfire_grace_s: float = Field(
        60.0, ge=1, le=86400,
        description="A periodic run still waiting this long after its time has misfired: its task's "
        "catch-up policy (schedule.catchUp) decides whether it runs.",
    )
    heartbeat_s: int = Field(
        30, ge=30, le=3600,
        description="How often a running run's process says it is alive (Prefect's flow-run "
        "heartbeat; Prefect's minimum is 30 s).",
    )
    constraint_recheck_s: float = Field(
        30.0, gt=0, le=86400,
        description="How often the worker re-checks runs waiting for constraints (the trigger daemon "
        "releases them at once on a change; this covers a host without a daemon).",
    )
    crash_scan_s: float = Field(
        60.0, gt=0, le=86400,
        description="How often the worker looks for crashed runs and failed trigger actions nobody "
        "heard about (it acts on the events at once).",
    )
    crash_after_s: float = Field(
        90.0, gt=0, le=86400,
        description="A run silent this long after a heartbeat is marked Crashed (its process died "
        "with its worker or host), then retried by its task's retry policy. More than the heartbeat.",
    )

    @model_validator(mode="after")
    def _crash_after_heartbeat(self) -> WorkerSettings:
        if self.crash_after_s <= self.heartbeat_s:
            raise ValueError(
                f"BGTASKS_WORKER_CRASH_AFTER_S ({self.crash_after_s:g}) must be more than "
                f"BGTASKS_WORKER_HEARTBEAT_S ({self.heartbeat_s}), or live runs would be marked Crashed")
        return self


class ApiSettings(BaseSettings):
    """bgtasks' REST API (``bgtasks api``)."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_API_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the API binds.")
    port: int = Field(4300, ge=1, le=65535, description="Port of the REST API.")
    auth: Literal["token", "none"] = Field(
        "token",
        description="`token`: every request but /health needs a bearer token (`bgtasks token create`). "
        "`none`: no authentication, accepted only when the API binds to loopback.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the API answers to besides loopback, its bind address and the host of "
        "BGTASKS_PUSH_PUBLIC_URL (JSON list); any other Host header is refused (DNS rebinding).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (front ends) that may call the API (CORS); requests from any other "
        "origin are refused (JSON list).",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="Largest request body; larger is refused with 413.")
    max_json_depth: int = Field(
        64, ge=4, le=512, description="Deepest nesting of arrays and objects in a JSON body; deeper is a 400.")
    max_report_data_bytes: int = Field(
        65_536, ge=0, le=4 * 1_048_576, description="Largest `data` of a device report (JSON-encoded bytes).")


class TaskSettings(BaseSettings):
    """Limits of task definitions, whatever creates them (CLI, REST API, Prefect UI)."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_TASK_", extra="ignore")

    data_max_bytes: int = Field(
        262_144, ge=0, le=400_000,
        description="Largest task `data` (JSON-encoded bytes). Prefect refuses a run's parameters over 512 KiB "
        "in all, and the definition travels with the data.")
    file_roots: list[Path] | None = Field(
        None,
        description="Directories the built-in handlers may read and write (data-sync's source and destination, "
        "demo's recordTo; JSON list). Paths are resolved and must lie inside one; symlinks are not followed. "
        "Default: <home>/sync.")


class PushSettings(BaseSettings):
    """Silent pushes (``mobile_push``): credentials are paths to files, never logged."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_PUSH_", extra="ignore")

    sender: Literal["auto", "memory"] = Field(
        "auto", description="`auto`: FCM and APNs with the credentials below; `memory`: record pushes "
        "in memory without sending (development).")
    fcm_credentials_file: Path | None = Field(
        None, description="Firebase service-account JSON file (FCM HTTP v1).")
    fcm_url: str | None = Field(None, description="Override of the FCM send URL (tests, proxies).")
    fcm_engine: Literal["h2", "sdk"] = Field(
        "h2", description="`h2`: firebase-admin's messages on one HTTP/2 connection of bgtasks' own client "
        "(fast); `sdk`: firebase-admin's send_each_async.")
    fcm_ca_file: Path | None = Field(None, description="The CA bundle that verifies FCM's and the token "
                                     "endpoint's certificates instead of the public roots (a local FCM, tests).")
    apns_key_file: Path | None = Field(None, description="APNs auth key (.p8, ES256).")
    apns_key_id: str | None = Field(None, description="The key's id (JWT header kid).")
    apns_team_id: str | None = Field(None, description="Apple developer team id (JWT iss).")
    apns_environment: Literal["production", "sandbox"] = Field(
        "production", description="api.push.apple.com or api.sandbox.push.apple.com.")
    apns_base_url: str | None = Field(None, description="Override of the APNs base URL of "
                                      "BGTASKS_PUSH_APNS_ENVIRONMENT (tests).")
    apns_other_base_url: str | None = Field(None, description="Override of the other APNs environment's base URL "
                                            "(tests): where devices registered for it, and tokens refused by the "
                                            "default one, are pushed.")
    apns_ca_file: Path | None = Field(None, description="Extra CA bundle for the APNs connection (tests).")
    chunk_size: int = Field(100, ge=1, le=500, description="Messages per send batch (and per Prefect task).")
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per message for transient errors.")
    initial_backoff_s: float = Field(0.5, ge=0, le=60)
    max_backoff_s: float = Field(30.0, ge=0, le=600, description="Cap of one backoff delay.")
    max_retry_after_s: float = Field(
        120.0, ge=0, le=3600, description="A Retry-After longer than this ends the retries for the run.")
    public_url: str | None = Field(
        None, description="The REST API's URL as devices reach it (in the payload's reportUrl): https, or "
        "http on a loopback address (development). Device-targeted tasks need it.")
    report_wait_s: float = Field(
        600.0, gt=0, le=86400, description="How long a run waits for Android devices' reports when the task has no "
        "timeout.")
    report_wait_ios_s: float = Field(
        14400.0, gt=0, le=86400, description="The same for iOS devices, whose longer work runs in a "
        "BGProcessingTask that iOS starts only while the device is idle and charging (often hours later). "
        "A run waits for the longest wait of its devices' platforms, and holds its worker slot meanwhile.")
    budget_ios_per_hour: int = Field(
        3, ge=0, le=3600, description="Background pushes an iOS device may get per hour (Apple: more than two or "
        "three an hour are throttled); more are held until the budget allows them. 0: no budget.")
    budget_android_per_hour: int = Field(
        20, ge=0, le=3600, description="The same for Android devices (FCM throttles collapsible messages to a "
        "device after a burst of 20, then one per 3 minutes). 0: no budget.")
    feedback_url: str | None = Field(
        None, description="Called (POST, JSON) when a push service declares a device's token dead, with the "
        "reason and the service's timestamp; signed with BGTASKS_PUSH_FEEDBACK_SECRET (X-Bgtasks-Signature).")
    feedback_secret: SecretStr | None = Field(
        None, description="The HMAC-SHA256 key of the feedback webhook's signature (required with its URL).")

    @field_validator("feedback_url")
    @classmethod
    def _feedback_http(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"{v!r}: an http(s) URL")
        return v

    @model_validator(mode="after")
    def _feedback_signed(self) -> "PushSettings":
        if self.feedback_url and not self.feedback_secret:
            raise ValueError("BGTASKS_PUSH_FEEDBACK_URL needs BGTASKS_PUSH_FEEDBACK_SECRET: the receiver checks "
                             "each call's HMAC signature with it")
        return self

    @field_validator("public_url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        # Devices send their report tokens there: plain HTTP only where nobody else listens.
        if v is None:
            return v
        url = urlsplit(v)
        if url.hostname and (url.scheme == "https" or (url.scheme == "http" and is_loopback(url.hostname))):
            return v.rstrip("/")
        raise ValueError(f"{v!r}: devices send their report tokens to this URL, so it must be https "
                         "(http only on a loopback address, for development)")


def _default_roots() -> list[Path]:
    import tempfile

    return [Path.home(), Path(tempfile.gettempdir())]


class DaemonSettings(BaseSettings):
    """The trigger daemon (``bgtasks daemon``) and the file triggers it may watch."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_DAEMON_", extra="ignore")

    allowed_roots: list[Path] = Field(
        default_factory=_default_roots,
        description="File triggers may watch only directories inside these (JSON list in the environment); "
        "default: the user's home and the temp directory.")
    network_mode: Literal["auto", "netlink", "poll"] = Field(
        "auto", description="How network changes are noticed: `netlink` (Linux rtnetlink doorbell), `poll` "
        "(netifaces + psutil every network_portable_poll_s, any platform) or `auto` (netlink where it opens). "
        "See docs/sensors.md.")
    network_poll_s: float = Field(30.0, gt=0, le=3600, description="Safety poll of the network (netlink wakes it).")
    network_portable_poll_s: float = Field(
        5.0, gt=0, le=3600, description="Poll interval of the network without netlink (network_mode poll).")
    network_sysfs: Path = Field(
        Path("/sys/class/net"), description="Where interface classes (wifi, cellular, ethernet) are read.")
    power_mode: Literal["auto", "sysfs", "psutil"] = Field(
        "auto", description="Where power is read: `sysfs` (power_root, Linux), `psutil` "
        "(psutil.sensors_battery, any platform) or `auto` (sysfs where power_root is a directory).")
    power_poll_s: float = Field(30.0, gt=0, le=3600)
    power_root: Path = Field(Path("/sys/class/power_supply"), description="Where batteries and chargers are read.")
    idle_mode: Literal["auto", "psi", "cpu"] = Field(
        "auto", description="What counts for device idle: `psi` (CPU percent and Linux CPU pressure), `cpu` "
        "(CPU percent alone, any platform) or `auto` (psi where /proc/pressure/cpu reads).")
    idle_poll_s: float = Field(30.0, gt=0, le=3600)
    idle_cpu_percent: float = Field(
        10.0, gt=0, le=100, description="Device idle: CPU use (of all CPUs together) below this for three samples.")
    file_observer: Literal["auto", "native", "polling"] = Field(
        "auto", description="How file triggers see changes: `native` (inotify, FSEvents, ReadDirectoryChangesW, "
        "kqueue), `polling` (a walk every file_poll_s, any filesystem) or `auto` (native where available).")
    file_poll_s: float = Field(1.0, gt=0, le=3600, description="Interval of the polling file observer.")
    storage_path: Path | None = Field(None, description="The filesystem watched for low storage; default: the home.")
    storage_poll_s: float = Field(60.0, gt=0, le=3600)
    rules_refresh_s: float = Field(
        5.0, gt=0, le=600, description="How often the daemon re-reads the triggered tasks (new, changed, deleted).")
    sensors: list[Literal["network", "power", "idle", "storage", "file"]] = Field(
        default_factory=lambda: ["network", "power", "idle", "storage", "file"],
        description="Which sensors run.")


class Settings(BaseSettings):
    """The root of the tree."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".bgtasks",
        description="Where bgtasks keeps its state: the Prefect database, results, logs.",
    )
    database_url: str | None = Field(
        None,
        description="bgtasks' own database (tokens, devices, deliveries): sqlite:/// or postgresql:// URL; "
        "default: the Prefect database when it is PostgreSQL, else <home>/bgtasks.db.",
    )
    host_name: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-_]*$",
        description="This host's name in events (bgtasks.host.<name>), worker names and constraint messages; "
        "default: the machine's host name. Hosts of one cluster need different ones.")
    results_path: Path | None = Field(
        None, description="Where runs store their results; default <home>/prefect/storage. Hosts of a cluster "
        "share one (a network filesystem), or the REST API cannot read results of runs on other hosts.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    task: TaskSettings = Field(default_factory=TaskSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def auth_string_file(self) -> Path:
        """Where the embedded server's generated auth string is kept (mode 0600)."""
        return self.home / AUTH_STRING_FILE

    @property
    def handler_roots(self) -> list[Path]:
        """Where the built-in handlers may touch files (``BGTASKS_TASK_FILE_ROOTS``)."""
        return list(self.task.file_roots) if self.task.file_roots is not None else [self.home / "sync"]

    def load_auth_string(self) -> None:
        """Take the embedded server's auth string from the home, if it has one yet.

        An auth string the user gave (``BGTASKS_SERVER_AUTH_STRING``) is kept; with an external
        Prefect API (``api_url``) nothing is read: that server's own credentials apply
        (``BGTASKS_SERVER_AUTH_STRING``, or ``PREFECT_API_AUTH_STRING``/``PREFECT_API_KEY`` as
        Prefect reads them).
        """
        if self.server.auth_string is not None or self.server.api_url or not self.auth_string_file.exists():
            return
        from bgtasks.home import read_or_create_secret

        self.server.auth_string = SecretStr(read_or_create_secret(self.auth_string_file))

    def ensure_auth_string(self) -> None:
        """:meth:`load_auth_string`, generating the secret (0600, in a 0700 home) on first use:
        what ``bgtasks up`` and ``bgtasks service install`` do before the server starts."""
        self.load_auth_string()
        if self.server.auth_string is not None or self.server.api_url:
            return
        from bgtasks.home import ensure_home, read_or_create_secret

        ensure_home(self.home)
        self.server.auth_string = SecretStr(read_or_create_secret(self.auth_string_file))

    def server_allowed_hosts(self) -> list[str]:
        """Host names the embedded Prefect server answers to (see :func:`allowed_hosts`)."""
        return allowed_hosts(self.server.host, self.server.allowed_hosts)

    def server_origins(self) -> list[str]:
        """Browser origins of the Prefect UI: each allowed host on the server's port, and the extras."""
        return origins(self.server_allowed_hosts(), self.server.port, self.server.allowed_origins)

    @property
    def store_url(self) -> str:
        """The URL of bgtasks' own database (see ``database_url``)."""
        if self.database_url:
            return self.database_url
        prefect_db = self.server.database_url or ""
        if prefect_db.startswith(("postgresql", "postgres:")):
            return prefect_db
        return f"sqlite:///{self.home / 'bgtasks.db'}"

    @property
    def api_url(self) -> str:
        if self.server.api_url:
            return self.server.api_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def prefect_env(self, serving: bool | None = None) -> dict[str, str]:
        """The Prefect settings every bgtasks process shares, as environment variables.

        The server, the worker, the flow-run processes and the CLI must agree on the
        API URL and on where results are stored, or a result written by a run cannot
        be read by ``bgtasks task show``. ``serving``: the process is a Prefect server or
        services process (default: unless the Prefect API is external); a cluster's
        server replicas have ``api_url`` (their load balancer) and serve all the same.
        """
        serving = not self.server.api_url if serving is None else serving
        env = {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": self.server.host,
            "PREFECT_SERVER_API_PORT": str(self.server.port),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.results_path or self.prefect_home / "storage"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(self.worker.query_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": str(self.worker.prefetch_seconds),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(self.worker.heartbeat_s),
            # The CLI owns its terminal; Prefect's own prompts would hang `bgtasks up`.
            "PREFECT_CLI_PROMPT": "false",
        }
        if self.server.auth_string is not None:
            secret = self.server.auth_string.get_secret_value()
            env["PREFECT_API_AUTH_STRING"] = secret
            if serving:
                env["PREFECT_SERVER_API_AUTH_STRING"] = secret
        if serving:
            # Browsers cannot act for a page: state changes need a CSRF token, and only the
            # UI's own origins may read answers (Prefect's defaults: CSRF off, CORS "*").
            # The Host and Origin checks are bgtasks.prefect_server's.
            env["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] = "true"
            env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] = ",".join(self.server_origins())
        if self.server.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.server.database_url
        if self.server.redis_url and serving:
            env.update(redis_env(self.server.redis_url))
        if self.server.on_sqlite:
            # Prefect's late-runs service marks each run 15 s past its time "Late", one write
            # per run. After a stall or a restart that is hundreds at once; on SQLite's single
            # write lock they time out ("database is locked") and stall the whole server
            # (measured: the soak and the restart test). Missed periodic runs are bgtasks'
            # catch-up's business (schedule.catchUp); runs keep the Scheduled state.
            env["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"] = "false"
        return env


def redis_env(url: str) -> dict[str, str]:
    """What every Prefect server and services process of a cluster sets to share one Redis, as
    Prefect's self-hosting guide has it: messaging (events between servers and services), the
    events' causal ordering, concurrency lease storage and the background-task queue (docket)."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": url,
        "PREFECT_SERVER_DOCKET_URL": url,
    }


#: Settings a running ``bgtasks up`` gave its parts beyond the environment it was started in
#: (``--push emulator``: where pushes go), with its PID: ``<home>/stack-env.json``.
STACK_ENV_FILE = "stack-env.json"


def load_settings() -> Settings:
    """Read the settings from the environment (``BGTASKS_*``) once, and the embedded server's
    auth string from the home (``bgtasks up`` generates it there on first start).

    While a ``bgtasks up`` of the same home runs with settings of its own making (the push
    emulator's), a command in another terminal takes them too, below its own environment:
    ``bgtasks task create --device-label`` then checks against the stack it talks to."""
    settings = Settings()
    extra = running_stack_env(settings.home)
    if extra:
        for key, value in extra.items():
            os.environ.setdefault(key, value)
        settings = Settings()
    settings.load_auth_string()
    return settings


def running_stack_env(home: Path) -> dict[str, str]:
    """The settings in ``<home>/stack-env.json`` while the ``bgtasks up`` that wrote them runs."""
    import json

    path = home / STACK_ENV_FILE
    try:
        doc = json.loads(path.read_text())
        os.kill(int(doc["pid"]), 0)  # a stack killed without its clean-up left the file behind
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    env = doc.get("env")
    if not isinstance(env, dict):
        return {}
    return {str(k): str(v) for k, v in env.items() if str(k).startswith("BGTASKS_PUSH_")}


def panel_url(settings: Settings) -> str:
    """Where the task panel is served: ``/ui/`` on the REST API (its public URL when set)."""
    if settings.push.public_url:
        return settings.push.public_url.rstrip("/") + "/ui/"
    host = "127.0.0.1" if is_wildcard(settings.api.host) else settings.api.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.api.port}/ui/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """``0.0.0.0`` or ``::``: every address of the machine."""
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(bind_host: str, extra: list[str]) -> list[str]:
    """The Host header names a server bound to ``bind_host`` answers to.

    Loopback names always; the bind address itself; for a wildcard bind, the machine's
    names and addresses; and ``extra`` (public names behind a proxy). Anything else is a
    DNS-rebinding attempt or a misdirected request.
    """
    names = [*LOOPBACK_NAMES]
    if is_wildcard(bind_host):
        import socket

        names += [socket.gethostname(), socket.getfqdn()]
        try:
            import psutil

            names += [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                      if a.family in (socket.AF_INET, socket.AF_INET6)]
        except Exception:  # noqa: BLE001 - the names above still hold
            pass
    else:
        names.append(bind_host.strip("[]"))
    names += extra
    out: list[str] = []
    for name in names:
        name = name.lower()
        if name and name not in out:
            out.append(name)
    return out


def origins(hosts: list[str], port: int, extra: list[str]) -> list[str]:
    """``http://host:port`` for each host (IPv6 in brackets; networks have no origin), then ``extra``."""
    out = [f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}" for h in hosts if "/" not in h]
    return out + [o.rstrip("/") for o in extra if o.rstrip("/") not in out]
