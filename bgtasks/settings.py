"""One settings tree for bgtasks, read once at the entry point and passed down.

Every component has its own pydantic-settings class whose environment prefix
follows its place in the tree (``BGTASKS_SERVER_PORT``, ``BGTASKS_WORKER_LIMIT``).
Nothing here reads the environment at import time: call :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_POOL = "background-tasks"


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
    start_timeout_s: float = Field(
        120.0, gt=0, le=900, description="How long `bgtasks up` waits for the server to be healthy."
    )

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


class PushSettings(BaseSettings):
    """Silent pushes (``mobile_push``): credentials are paths to files, never logged."""

    model_config = SettingsConfigDict(env_prefix="BGTASKS_PUSH_", extra="ignore")

    sender: Literal["auto", "memory"] = Field(
        "auto", description="`auto`: FCM and APNs with the credentials below; `memory`: record pushes "
        "in memory without sending (development).")
    fcm_credentials_file: Path | None = Field(
        None, description="Firebase service-account JSON file (FCM HTTP v1).")
    fcm_url: str | None = Field(None, description="Override of the FCM send URL (tests, proxies).")
    apns_key_file: Path | None = Field(None, description="APNs auth key (.p8, ES256).")
    apns_key_id: str | None = Field(None, description="The key's id (JWT header kid).")
    apns_team_id: str | None = Field(None, description="Apple developer team id (JWT iss).")
    apns_environment: Literal["production", "sandbox"] = Field(
        "production", description="api.push.apple.com or api.sandbox.push.apple.com.")
    apns_base_url: str | None = Field(None, description="Override of the APNs base URL (tests).")
    apns_ca_file: Path | None = Field(None, description="Extra CA bundle for the APNs connection (tests).")
    chunk_size: int = Field(100, ge=1, le=500, description="Messages per send batch (and per Prefect task).")
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per message for transient errors.")
    initial_backoff_s: float = Field(0.5, ge=0, le=60)
    max_backoff_s: float = Field(30.0, ge=0, le=600, description="Cap of one backoff delay.")
    max_retry_after_s: float = Field(
        120.0, ge=0, le=3600, description="A Retry-After longer than this ends the retries for the run.")
    public_url: str | None = Field(
        None, description="The REST API's URL as devices reach it (in the payload's reportUrl); "
        "default: the local API URL.")
    report_wait_s: float = Field(
        600.0, gt=0, le=86400, description="How long a run waits for device reports when the task has no timeout.")


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
    power_mode: Literal["auto", "sysfs", "psutil"] = Field(
        "auto", description="Where power is read: `sysfs` (power_root, Linux), `psutil` "
        "(psutil.sensors_battery, any platform) or `auto` (sysfs where power_root is a directory).")
    power_poll_s: float = Field(30.0, gt=0, le=3600)
    power_root: Path = Field(Path("/sys/class/power_supply"), description="Where batteries and chargers are read.")
    idle_mode: Literal["auto", "psi", "cpu"] = Field(
        "auto", description="What counts for device idle: `psi` (CPU percent and Linux CPU pressure), `cpu` "
        "(CPU percent alone, any platform) or `auto` (psi where /proc/pressure/cpu reads).")
    idle_poll_s: float = Field(30.0, gt=0, le=3600)
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
    server: ServerSettings = Field(default_factory=ServerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

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

    def prefect_env(self) -> dict[str, str]:
        """The Prefect settings every bgtasks process shares, as environment variables.

        The server, the worker, the flow-run processes and the CLI must agree on the
        API URL and on where results are stored, or a result written by a run cannot
        be read by ``bgtasks task show``.
        """
        env = {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": self.server.host,
            "PREFECT_SERVER_API_PORT": str(self.server.port),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect_home / "storage"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(self.worker.query_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": str(self.worker.prefetch_seconds),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(self.worker.heartbeat_s),
            # The CLI owns its terminal; Prefect's own prompts would hang `bgtasks up`.
            "PREFECT_CLI_PROMPT": "false",
        }
        if self.server.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.server.database_url
        if self.server.on_sqlite:
            # Prefect's late-runs service marks each run 15 s past its time "Late", one write
            # per run. After a stall or a restart that is hundreds at once; on SQLite's single
            # write lock they time out ("database is locked") and stall the whole server
            # (measured: the soak and the restart test). Missed periodic runs are bgtasks'
            # catch-up's business (schedule.catchUp); runs keep the Scheduled state.
            env["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"] = "false"
        return env


def load_settings() -> Settings:
    """Read the settings from the environment (``BGTASKS_*``) once."""
    return Settings()
