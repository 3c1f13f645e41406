"""Prefect's server, locked and with two fixes for its embedded SQLite: ``python -m bgtasks.prefect_server server start``.

It runs Prefect's own CLI (``python -m prefect``) after :func:`guard_server_app` (every
request needs the auth string, which ``server start`` refuses to run without, and the
Host and Origin checks of :mod:`bgtasks.guard`), :func:`close_cursors_in_their_thread` and
:func:`immediate_write_transactions` (its docstring says what that one fixes).

The cursor fix: SQLAlchemy's aiosqlite adapter leaves the cursor of a failed or cancelled
statement for the garbage collector, whose reset of it on the event loop's thread froze the
whole server for SQLite's busy timeout; each such cursor is closed on its connection's own
thread instead. Both fixes, and how they were found, are in docs/prefect.md. PostgreSQL is
untouched.
"""

from __future__ import annotations

import logging
from typing import Any

_PATCHED = "_bgtasks_closes_cursors"
_PATCHED_BEGIN = "_bgtasks_begins_immediate"
_PATCHED_GUARD = "_bgtasks_guarded"
_PATCHED_DOCKET = "_bgtasks_calm_docket"
#: How often the server's background-task worker (docket) looks for due work; docket's default
#: is 0.25 s, which on the embedded in-memory broker cost about 1 % of a core at rest.
DOCKET_CHECK_S = 1.0
#: The adapter versions whose cursor this replaces (its attributes and behaviour as read).
_KNOWN_SQLALCHEMY = "2.0."


def _close_on_its_thread(cursor: Any) -> None:
    """Queue ``cursor.close()`` on the cursor's aiosqlite connection thread, without waiting."""
    conn = getattr(cursor, "_conn", None)
    raw = getattr(cursor, "_cursor", None)
    tx = getattr(conn, "_tx", None)
    if tx is None or raw is None:
        return
    # The thread runs its queue in order: the close follows the statement still running.
    tx.put_nowait((None, raw.close))


def close_cursors_in_their_thread() -> None:
    """Patch SQLAlchemy's aiosqlite cursor so no aiosqlite cursor outlives its statement unclosed."""
    import sqlalchemy
    from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite

    cls = sa_aiosqlite.AsyncAdapt_aiosqlite_cursor
    if getattr(cls, _PATCHED, False):
        return
    if not sqlalchemy.__version__.startswith(_KNOWN_SQLALCHEMY):
        logging.getLogger("bgtasks.prefect_server").warning(
            "SQLAlchemy %s is not a version this fix was written for (%sx): its aiosqlite cursor is "
            "left as it is; on SQLite the server may freeze for its busy timeout under load",
            sqlalchemy.__version__, _KNOWN_SQLALCHEMY)
        return

    def execute(self: Any, operation: Any, parameters: Any = None) -> Any:
        cursor = None
        try:
            cursor = self.await_(self._connection.cursor())
            if parameters is None:
                self.await_(cursor.execute(operation))
            else:
                self.await_(cursor.execute(operation, parameters))
            if cursor.description:
                self.description = cursor.description
                self.lastrowid = self.rowcount = -1
                if not self.server_side:
                    self._rows = sa_aiosqlite.deque(self.await_(cursor.fetchall()))
            else:
                self.description = None
                self.lastrowid = cursor.lastrowid
                self.rowcount = cursor.rowcount
            if not self.server_side:
                self.await_(cursor.close())
            else:
                self._cursor = cursor
            cursor = None  # closed, or handed to the server-side cursor
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        finally:
            if cursor is not None:  # failed or cancelled: close it where its statement runs
                _close_on_its_thread(cursor)

    def executemany(self: Any, operation: Any, seq_of_parameters: Any) -> Any:
        cursor = None
        try:
            cursor = self.await_(self._connection.cursor())
            self.await_(cursor.executemany(operation, seq_of_parameters))
            self.description = None
            self.lastrowid = cursor.lastrowid
            self.rowcount = cursor.rowcount
            self.await_(cursor.close())
            cursor = None
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        finally:
            if cursor is not None:
                _close_on_its_thread(cursor)

    cls.execute = execute
    cls.executemany = executemany
    setattr(cls, _PATCHED, True)


def immediate_write_transactions() -> None:
    """On SQLite, begin every explicit transaction of the server with ``BEGIN IMMEDIATE``.

    A DEFERRED transaction's upgrade from read to write lock is refused at once when another
    connection committed in between (503, and the client retries after 2 s); IMMEDIATE
    waits for the write lock at BEGIN instead. Reads outside transactions are untouched.
    """
    from contextlib import asynccontextmanager

    from prefect.server.database.configurations import AioSqliteConfiguration

    if getattr(AioSqliteConfiguration, _PATCHED_BEGIN, False):
        return
    deferred = AioSqliteConfiguration.begin_transaction

    @asynccontextmanager
    async def begin_transaction(self: Any, session: Any, with_for_update: bool = False) -> Any:
        async with deferred(self, session, with_for_update=True) as transaction:
            yield transaction

    AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]
    setattr(AioSqliteConfiguration, _PATCHED_BEGIN, True)


def calm_background_worker(check_s: float = DOCKET_CHECK_S) -> None:
    """Make the server's docket worker look for due work every ``check_s`` instead of 4 times a second.

    Its work is Prefect's perpetual services (every 5 s or more: pause expirations, the
    scheduler, the foreman...) and follow-ups of API calls (marking queues and deployments
    ready after a poll); each starts at most ``check_s`` later.
    """
    from datetime import timedelta

    from prefect.server.api import background_workers

    if getattr(background_workers.Worker, _PATCHED_DOCKET, False):
        return
    original = background_workers.Worker

    class Worker(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("minimum_check_interval", timedelta(seconds=check_s))
            kwargs.setdefault("scheduling_resolution", timedelta(seconds=check_s))
            super().__init__(*args, **kwargs)

    setattr(Worker, _PATCHED_DOCKET, True)
    background_workers.Worker = Worker  # type: ignore[misc]


class AuthFirst:
    """401 for an API request without the auth string, before any other middleware runs.

    Prefect checks the auth string too, but after its CSRF middleware, which reads the
    database for any request that carries CSRF headers: unauthenticated requests should
    cost nothing and be told 401. Health probes stay open (as in Prefect); websockets
    authenticate with their first message (Prefect's own check); CORS preflights carry no
    credentials by design; the UI's files are public (it asks for the string at its login).
    """

    OPEN = frozenset({"/api/health", "/api/ready"})

    def __init__(self, app: Any, auth_string: str) -> None:
        import base64

        self.app = app
        self.expected = ("Basic " + base64.b64encode(auth_string.encode()).decode()).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import hmac

        from bgtasks.guard import header

        path = scope.get("path", "")
        method = scope.get("method")
        if (scope["type"] == "http" and (path == "/api" or path.startswith("/api/")) and method != "OPTIONS"
                and not (path in self.OPEN and method in ("GET", "HEAD"))):
            given = (header(scope, b"authorization") or "").encode("latin-1")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"exception_message":"Unauthorized"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def server_doors() -> tuple[list[str], list[str], str]:
    """The Host names and browser origins the server answers to, and its auth string, from the
    settings it runs with.

    Raises ``SystemExit`` when the server would run without its auth string or with every
    origin allowed: bgtasks never starts an open Prefect server.
    """
    from prefect.settings import get_current_settings

    from bgtasks.settings import ServerSettings, allowed_hosts

    api = get_current_settings().server.api
    if api.auth_string is None or not api.auth_string.get_secret_value():
        raise SystemExit("bgtasks.prefect_server: refusing to start without an auth string "
                         "(PREFECT_SERVER_API_AUTH_STRING); `bgtasks up` and `bgtasks service install` set it")
    origins = [o.strip() for o in api.cors_allowed_origins.split(",") if o.strip()]
    if not origins or "*" in origins:
        raise SystemExit("bgtasks.prefect_server: refusing to allow every browser origin "
                         "(PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS); `bgtasks up` sets the UI's own")
    return allowed_hosts(api.host, ServerSettings().allowed_hosts), origins, api.auth_string.get_secret_value()


def guard_server_app(hosts: list[str], origins: list[str], auth_string: str) -> None:
    """Put :class:`bgtasks.guard.HostOriginGuard` and :class:`AuthFirst` in front of the app
    ``prefect server start`` serves.

    The wrapping is at ``uvicorn.run``, which ``server start`` calls in this process with the
    app it built: the server's own in-process clients (automation actions, which call the
    API through an in-memory transport with the Host ``prefect-in-memory``) keep the bare app.
    """
    import uvicorn

    from bgtasks.guard import HostOriginGuard

    if getattr(uvicorn.run, _PATCHED_GUARD, False):
        return
    serve = uvicorn.run

    def run(app: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(app, str):  # an app object, not a factory path (those are refused above)
            app = HostOriginGuard(AuthFirst(app, auth_string), hosts, origins)
        return serve(app, *args, **kwargs)

    setattr(run, _PATCHED_GUARD, True)
    uvicorn.run = run  # type: ignore[assignment]


#: The PostgreSQL advisory lock the servers of a cluster take around Prefect's migrations.
MIGRATION_LOCK = 0x62677461736B73  # "bgtasks"


def migrate_once_per_cluster() -> None:
    """On PostgreSQL: run Prefect's migrations under an advisory lock, then start without them.

    Prefect migrates at each server's start (``PREFECT_API_DATABASE_MIGRATE_ON_START``);
    two replicas starting together both create its tables, and one fails ("duplicate
    key ... alembic_version", seen on the first start of the local cluster). Under the
    lock the first migrates and the others find nothing to do. SQLite serves one server.
    Called before Prefect is imported: its settings read the environment once."""
    import asyncio
    import os

    url = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL") or os.environ.get(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL") or ""
    switches = ("PREFECT_SERVER_DATABASE_MIGRATE_ON_START", "PREFECT_API_DATABASE_MIGRATE_ON_START")
    if not url.startswith("postgresql") or any(os.environ.get(k, "").lower() in ("false", "0", "no") for k in switches):
        return  # SQLite, or told not to migrate
    for key in switches:
        os.environ[key] = "false"

    async def locked() -> None:
        import asyncpg
        from prefect.server.database import provide_database_interface

        conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
        try:
            # Polled, not waited for: a session waiting in pg_advisory_lock is a running
            # statement, and the migrations' CREATE INDEX CONCURRENTLY waits for it (a deadlock).
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK):
                await asyncio.sleep(0.5)
            await provide_database_interface().create_db()  # what the start would have run
        finally:
            await conn.close()  # the lock goes with the session

    asyncio.run(locked())


def main() -> None:
    import sys

    from bgtasks.home import private_umask

    private_umask()  # the database, its journal and the logs are the owner's alone
    if sys.argv[1:3] == ["server", "start"] or sys.argv[1:4] == ["server", "services", "start"]:
        migrate_once_per_cluster()
    if sys.argv[1:3] == ["server", "start"]:
        from bgtasks.prefect_seam import require

        require("server")
        if any(a.startswith("--workers") for a in sys.argv):
            # Several uvicorn workers build the app in new processes, without the guard.
            raise SystemExit("bgtasks.prefect_server: --workers is not supported; run one server per "
                             "process (several behind a load balancer)")
        guard_server_app(*server_doors())
    close_cursors_in_their_thread()
    immediate_write_transactions()
    calm_background_worker()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
