"""The multi-host layout on one machine: what ``bgtasks cluster up`` starts.

docs/scaling.md describes the layout; this starts it here, for trying it and for the
tests: a new PostgreSQL database, a Redis of its own (``redis-server`` on a free port),
two Prefect API replicas (the ``server-api`` role: ``server start --no-services``) behind
HAProxy, one Prefect services process (``server-services``), two hosts, each with a
home, a host name (``BGTASKS_HOST_NAME``), a worker and a trigger daemon, and two REST API
replicas behind the same HAProxy. Every part runs the argv the service files run on a real
host (:func:`bgtasks.parts.role_parts`), with the environment such a host has: the shared
settings of ``cluster.env`` (mode 0600) and its own.

Like a service manager (``Restart=on-failure``), :meth:`Cluster.supervise` starts a part
again ``RESTART_S`` after it died. :meth:`Cluster.stop` stops the REST APIs, daemons,
workers, services, HAProxy, the API replicas and Redis, in that order, and drops the
database unless it is kept. ``<dir>/cluster.json`` (0600) names every part's PID, log and
address, for the tests and for ``kill -9`` by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bgtasks import parts as stack_parts
from bgtasks.home import ensure_home, open_private, private_umask, read_or_create_secret
from bgtasks.settings import Settings
from bgtasks.stack import Process, StackError, healthy, server_healthy, wait_until

#: Seconds before a part that died is started again (systemd units: RestartSec=5).
RESTART_S = 2.0
#: HAProxy health checks of the replicas: every second, out after 2 failures, back after 1.
CHECK = "check inter 1s fall 2 rise 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_config(prefect_port: int, api_port: int, replicas: list[int], rest: list[int]) -> str:
    """HAProxy in front of the Prefect API replicas and the REST API replicas.

    A replica is taken out when its health check fails twice (2 s); a request whose
    connection fails is sent to the other replica (``retries`` + ``redispatch``: only
    connection failures, so nothing is sent twice). The checks send a Host header: the
    servers refuse requests without an allowed one (bgtasks.guard). ``timeout tunnel``: the workers' and
    daemons' event websockets stay open."""
    def servers(prefix: str, ports: list[int]) -> str:
        return "\n".join(f"  server {prefix}{i} 127.0.0.1:{p} {CHECK}" for i, p in enumerate(ports, 1))

    return f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout tunnel 1h
  retries 3
  option redispatch
frontend prefect
  bind 127.0.0.1:{prefect_port}
  default_backend prefect_api
frontend rest
  bind 127.0.0.1:{api_port}
  default_backend rest_api
backend prefect_api
  balance roundrobin
  option httpchk
  http-check send meth GET uri /api/health ver HTTP/1.1 hdr Host 127.0.0.1
  http-check expect status 200
{servers("prefect", replicas)}
backend rest_api
  balance roundrobin
  option httpchk
  http-check send meth GET uri /health ver HTTP/1.1 hdr Host 127.0.0.1
  http-check expect status 200
{servers("rest", rest)}
"""


@dataclass
class Part:
    """One process of the cluster: its Process, environment and home; ``health``: its
    readiness check (None: started is enough)."""

    process: Process
    env: dict[str, str]
    home: Path
    address: str = ""
    health: Callable[[], bool] | None = None
    died_at: float | None = None
    restarts: int = 0


@dataclass
class Cluster:
    """The local cluster in ``dir``; ``postgres``: an admin URL of a PostgreSQL server
    (``postgresql://user@host:port``) where its database is created."""

    base: Settings
    dir: Path
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    prefect_port: int = 4300
    api_port: int = 8300
    hosts: tuple[str, ...] = ("host-a", "host-b")
    api_replicas: int = 2
    rest_replicas: int = 2
    host_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per host: extra variables
    keep: bool = False
    parts: dict[str, Part] = field(default_factory=dict)
    database: str = ""
    token: str = ""
    _stopping: bool = False

    # ---- addresses -------------------------------------------------------------

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def state_file(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def env_file(self) -> Path:
        return self.dir / "cluster.env"

    def host_home(self, host: str) -> Path:
        return self.dir / "hosts" / host

    # ---- settings of each part -------------------------------------------------

    def shared(self) -> Settings:
        """The settings every part shares (those of ``cluster.env``)."""
        s = self.base.model_copy(deep=True)
        s.server.database_url = "postgresql+asyncpg://" + self.database.split("://", 1)[1]
        s.server.redis_url = f"redis://127.0.0.1:{self.parts['redis'].address.rsplit(':', 1)[1]}/0"
        s.server.api_url = self.prefect_url
        s.server.auth_string = SecretStr(read_or_create_secret(self.dir / "secrets" / "prefect-auth-string"))
        s.server.allowed_origins = [f"http://127.0.0.1:{self.prefect_port}", f"http://localhost:{self.prefect_port}"]
        s.database_url = self.database
        s.results_path = self.dir / "results"  # a network filesystem on real hosts
        return s

    def _env(self, s: Settings, serving: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
        from bgtasks.service import settings_env

        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(settings_env(s))
        env["BGTASKS_HOST_NAME"] = s.host_name
        env["BGTASKS_SERVER_ALLOWED_ORIGINS"] = json.dumps(s.server.allowed_origins)
        env.update(s.prefect_env(serving=serving))
        # HAProxy answers 502 for a request whose replica died mid-way: retried like Prefect's
        # 503 (creations carry idempotency keys; a state proposal made twice is refused once).
        env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] = "502"
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(extra or {})
        return env

    def _add(self, name: str, argv: list[str] | tuple[str, ...], env: dict[str, str], home: Path,
             grace: float, address: str = "", health: Callable[[], bool] | None = None) -> Part:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = Part(Process(name, list(argv), self.dir / "logs" / f"{name}.log", grace), env, home, address, health)
        self.parts[name] = part
        return part

    def _role(self, name: str, role: str, s: Settings, extra: dict[str, str] | None = None,
              address: str = "", health: Callable[[], bool] | None = None) -> Part:
        py = sys.executable
        [p] = stack_parts.role_parts(s, (role,), py, str(Path(py).parent / "bgtasks"), f"bgtasks-{s.host_name}")
        return self._add(name, p.argv, self._env(s, role.startswith("server-"), extra), s.home, p.stop_grace_s,
                         address, health)

    # ---- start, supervise, stop ------------------------------------------------

    def start(self, progress: Callable[[str], None] = lambda s: None) -> None:
        private_umask()
        ensure_home(self.dir)
        for sub in ("logs", "secrets", "results", "hosts", "held"):
            (self.dir / sub).mkdir(exist_ok=True, mode=0o700)
        for tool in ("haproxy", "redis-server"):
            if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
                raise StackError(f"{tool} not found: install Debian's {tool.split('-')[0]} package "
                                 "(`make install-cluster` or apt-get install haproxy redis-server)")
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise

    def _start(self, progress: Callable[[str], None]) -> None:
        progress("creating the PostgreSQL database")
        self.database = create_database(self.postgres)
        redis_port = free_port()
        self._add("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                            "--appendonly", "no", "--dir", str(self.dir / "redis")],
                  dict(os.environ), self.dir / "redis", 5, f"127.0.0.1:{redis_port}",
                  lambda: _redis_ping(redis_port))
        shared = self.shared()
        self._write_env_file(shared)
        replicas = []
        for i in range(1, self.api_replicas + 1):
            s = shared.model_copy(deep=True)
            s.home = self.dir / f"server-api-{i}"
            s.server.port = free_port()
            s.server.host = "127.0.0.1"
            url = f"http://127.0.0.1:{s.server.port}/api"
            replicas.append(s.server.port)
            self._role(f"server-api-{i}", "server-api", s, address=url,
                       health=lambda url=url: server_healthy(url))
        s = shared.model_copy(deep=True)
        s.home = self.dir / "server-services"
        self._role("server-services", "server-services", s)
        rest = []
        for i in range(1, self.rest_replicas + 1):
            s = shared.model_copy(deep=True)
            s.home = self.dir / f"api-{i}"
            s.api.host, s.api.port = "127.0.0.1", free_port()
            rest.append(s.api.port)
            url = f"http://127.0.0.1:{s.api.port}"
            self._role(f"api-{i}", "api", s, address=url, health=lambda url=url: healthy(f"{url}/health"))
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.prefect_port, self.api_port, replicas, rest))
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self._add("haproxy", [haproxy, "-f", str(cfg), "-db"], dict(os.environ), self.dir, 5,
                  f"{self.prefect_url} {self.api_url}", lambda: server_healthy(self.prefect_url))
        for host in self.hosts:
            s = shared.model_copy(deep=True)
            s.home, s.host_name = self.host_home(host), host
            extra = self.host_env.get(host, {})
            self._role(f"worker-{host}", "worker", s, extra, host,
                       health=lambda s=s: _worker_registered(s, f"bgtasks-{s.host_name}"))
            self._role(f"daemon-{host}", "daemon", s, extra, host,
                       health=lambda s=s, name=f"daemon-{host}": _daemon_ready(s, self.parts[name]))

        self._launch("redis", progress)
        for i in range(1, self.api_replicas + 1):
            self._launch(f"server-api-{i}", progress, wait=False)
        for i in range(1, self.api_replicas + 1):
            self._wait(f"server-api-{i}", shared.server.start_timeout_s)
        self._launch("haproxy", progress)
        self._launch("server-services", progress)
        progress("creating the work pool, its queues, the UI controls and crash detection")
        self._prepare(shared)
        for i in range(1, self.rest_replicas + 1):
            self._launch(f"api-{i}", progress)
        wait_until(lambda: healthy(f"{self.api_url}/health"), 30, "HAProxy's REST API frontend",
                   self.parts["haproxy"].process.alive)
        for host in self.hosts:
            self._launch(f"worker-{host}", progress)
            self._launch(f"daemon-{host}", progress)
        self.token = self._create_token(shared)
        self.write_state()

    def _launch(self, name: str, progress: Callable[[str], None], wait: bool = True) -> None:
        part = self.parts[name]
        progress(f"starting {name}")
        part.process.start(part.env, part.home)
        if wait:
            self._wait(name, 120)

    def _wait(self, name: str, timeout_s: float) -> None:
        part = self.parts[name]
        if part.health is not None:
            wait_until(part.health, timeout_s, f"{name} (log: {part.process.log_path})", part.process.alive)

    def _prepare(self, shared: Settings) -> None:
        """The pool, its queues, the controls and crash detection, created through the load
        balancer's address by the command a worker's service runs first."""
        s = shared.model_copy(deep=True)
        s.home = self.dir / "server-services"
        env = self._env(s, serving=False)
        bgtasks = str(Path(sys.executable).parent / "bgtasks")
        out = subprocess.run([bgtasks, "service", "wait-server", "--timeout", "120", "--prepare"], env=env,
                             cwd=s.home, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise StackError(f"preparing the Prefect server failed: {out.stderr.strip()[-2000:]}")

    def _create_token(self, shared: Settings) -> str:
        """A REST API token (tasks:read, tasks:write) into ``secrets/api-token`` (0600)."""
        from bgtasks.auth import TokenStore, parse_scopes
        from bgtasks.store import open_store

        async def make() -> str:
            store = await open_store(shared.store_url)
            try:
                scopes = parse_scopes(["tasks:read", "tasks:write"])
                _, secret = await TokenStore(store).create("cluster", scopes)
                return secret
            finally:
                await store.close()

        secret = asyncio.run(make())
        path = self.dir / "secrets" / "api-token"
        path.unlink(missing_ok=True)
        with os.fdopen(open_private(path), "w") as f:
            f.write(secret + "\n")
        return secret

    def _write_env_file(self, shared: Settings) -> None:
        """``cluster.env``: the settings every host of the layout shares (on real hosts: in the
        environment of ``bgtasks service install --role``, which writes them into its own file)."""
        from bgtasks.service import environment_file, settings_env

        env = settings_env(shared)
        for key in ("BGTASKS_HOME", "BGTASKS_API_HOST", "BGTASKS_API_PORT", "BGTASKS_SERVER_HOST",
                    "BGTASKS_SERVER_PORT"):
            env.pop(key, None)  # each host's own
        self.env_file.unlink(missing_ok=True)
        with os.fdopen(open_private(self.env_file), "wb") as f:
            f.write(environment_file(dict(sorted(env.items()))))

    def write_state(self) -> None:
        state = {
            "pid": os.getpid(), "prefect": self.prefect_url, "ui": self.prefect_url.removesuffix("/api"),
            "api": self.api_url, "database": self.database, "env_file": str(self.env_file),
            "token_file": str(self.dir / "secrets" / "api-token"),
            "hosts": {h: str(self.host_home(h)) for h in self.hosts},
            "parts": {n: {"pid": p.process.pid, "log": str(p.process.log_path), "address": p.address,
                          "restarts": p.restarts} for n, p in self.parts.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(open_private(tmp), "w") as f:
            json.dump(state, f, indent=2)
        tmp.replace(self.state_file)

    def held(self, name: str) -> bool:
        """``<dir>/held/<part>`` exists: the part stays down once it dies (``systemctl stop``)."""
        return (self.dir / "held" / name).exists()

    def supervise(self, say: Callable[[str], None] = lambda s: None) -> None:
        """Start again each part that died ``RESTART_S`` ago, unless it is held (one pass; call
        it in a loop)."""
        changed = False
        now = time.monotonic()
        for name, part in self.parts.items():
            proc = part.process
            if self._stopping or not proc.started or proc.alive() or self.held(name):
                continue
            if part.died_at is None:
                part.died_at = now
                say(f"{name} exited ({proc.proc.returncode if proc.proc else '?'}); restarting in {RESTART_S:g}s")
            elif now - part.died_at >= RESTART_S:
                proc.stop((signal.SIGTERM,))  # closes its log
                proc.start(part.env, part.home)
                part.died_at, part.restarts, changed = None, part.restarts + 1, True
                say(f"{name} restarted (pid {proc.pid})")
        if changed:
            self.write_state()

    def stop(self) -> None:
        """REST APIs, daemons, workers (SIGINT twice, as bgtasks up), services, HAProxy, the
        API replicas, Redis; then the database, unless kept."""
        self._stopping = True
        order = sorted(self.parts, key=lambda n: ("api-", "daemon-", "worker-", "server-services", "haproxy",
                                                  "server-api-", "redis").index(_kind(n)))
        for name in order:
            proc = self.parts[name].process
            proc.stop((signal.SIGINT, signal.SIGINT) if name.startswith("worker-") else (signal.SIGTERM,))
        if self.database and not self.keep:
            drop_database(self.database)
            self.database = ""


def _kind(name: str) -> str:
    for prefix in ("api-", "daemon-", "worker-", "server-api-"):
        if name.startswith(prefix):
            return prefix
    return name


def _worker_registered(s: Settings, name: str) -> bool:
    """The worker ``name`` has registered with the pool (it polls)."""
    import httpx

    from triggers.prefect_api import PrefectApi

    async def check() -> bool:
        api = PrefectApi(s.api_url, 5, auth_string=s.server.auth_string.get_secret_value()
                         if s.server.auth_string else None)
        try:
            resp = await api.post(f"/work_pools/{s.worker.pool}/workers/filter", {})
            return any(w.get("name") == name for w in resp.json())
        finally:
            await api.aclose()

    try:
        return asyncio.run(check())
    except (httpx.HTTPError, ValueError):
        return False


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _daemon_ready(s: Settings, part: Part) -> bool:
    from bgtasks.stack import daemon_ready

    return daemon_ready(s.home / "daemon-state.json", part.process.pid)


# ---- the database ------------------------------------------------------------------


def _admin(postgres: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(postgres.rstrip("/") + "/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def create_database(postgres: str) -> str:
    """A new database ``bgtasks_cluster_<8 hex>`` on the server of ``postgres``; its URL."""
    admin = postgres.split("?", 1)[0].rstrip("/")
    if admin.count("/") > 2:  # a database named: the server's address is what counts
        admin = admin.rsplit("/", 1)[0]
    name = f"bgtasks_cluster_{uuid.uuid4().hex[:8]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    return f"{admin}/{name}"


def drop_database(url: str) -> None:
    admin, name = url.rsplit("/", 1)
    _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
