"""The embedded server's SQLite fix (bgtasks.prefect_server): no aiosqlite cursor is left open.

A cursor left open by a failed or cancelled statement is later freed by the garbage
collector on the event loop's thread, and freeing it resets its statement, which waits
for the connection's mutex while the connection's own thread waits for SQLite's write
lock: the soak's 60-second server freezes. Real SQLite files, SQLAlchemy's aiosqlite
dialect as Prefect's server uses it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite.cursor
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
from sqlalchemy.ext.asyncio import create_async_engine

from bgtasks.prefect_server import close_cursors_in_their_thread


@pytest.fixture
def stock_adapter():
    """SQLAlchemy's adapter as shipped (restored after the test)."""
    cls = sa_aiosqlite.AsyncAdapt_aiosqlite_cursor
    saved = {k: cls.__dict__[k] for k in ("execute", "executemany") if k in cls.__dict__}
    patched = cls.__dict__.get("_bgtasks_closes_cursors")
    if patched:
        pytest.skip("the adapter is already patched in this process; the stock behaviour cannot be seen")
    yield cls
    for k, v in saved.items():
        setattr(cls, k, v)
    if "_bgtasks_closes_cursors" in cls.__dict__:
        delattr(cls, "_bgtasks_closes_cursors")


class Cursors(list):
    """Every aiosqlite cursor that ran a statement, with the statement; kept alive to be read later."""

    def __init__(self) -> None:
        super().__init__()
        self.insert_submitted = asyncio.Event()

    def of(self, prefix: str) -> list[aiosqlite.cursor.Cursor]:
        return [c for sql, c in self if sql.startswith(prefix)]


@pytest.fixture
def cursors(monkeypatch):
    seen = Cursors()
    execute = aiosqlite.cursor.Cursor.execute

    async def recording_execute(self, sql, parameters=None):
        seen.append((sql, self))
        if sql.startswith("INSERT"):
            seen.insert_submitted.set()
        return await execute(self, sql, parameters)

    executemany = aiosqlite.cursor.Cursor.executemany

    async def recording_executemany(self, sql, parameters):
        seen.append((sql, self))
        return await executemany(self, sql, parameters)

    monkeypatch.setattr(aiosqlite.cursor.Cursor, "execute", recording_execute)
    monkeypatch.setattr(aiosqlite.cursor.Cursor, "executemany", recording_executemany)
    return seen


def is_closed(cursor: aiosqlite.cursor.Cursor) -> bool:
    """Closed by a close() of its own, not merely orphaned by its connection's closing."""
    try:
        cursor._cursor.fetchone()
    except sqlite3.ProgrammingError as exc:
        if "closed cursor" in str(exc):
            return True
        assert "closed database" in str(exc)
    return False


async def settled(cursors: list) -> None:
    """Each cursor's connection thread has run everything queued on it so far."""
    for conn in {id(c._conn): c._conn for _, c in cursors}.values():
        if conn._running and conn._connection is not None:
            await conn._execute(lambda: None)  # behind whatever is queued
        else:
            await asyncio.to_thread(conn._thread.join)  # stopping: it runs its queue to the end


def db(tmp_path: Path):
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO t VALUES (1, 'a')")
    # One pooled connection: the statement after the failure runs on the same thread.
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", pool_size=1, max_overflow=0)
    return path, engine


async def fail_a_statement(engine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await conn.execute(sa.text("INSERT INTO t VALUES (1, 'duplicate')"))


async def cancel_a_statement_waiting_for_the_lock(engine, path: Path, cursors: list) -> None:
    """A write that waits for SQLite's lock (held by another connection) and is cancelled."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (2, 'held')")

    @sa.event.listens_for(engine.sync_engine, "connect")
    def long_wait(dbapi_conn, _record):
        c = dbapi_conn.cursor()
        c.execute("PRAGMA busy_timeout = 600000")
        c.close()

    try:
        async def write():
            async with engine.connect() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (3, 'waits')"))

        task = asyncio.create_task(write())
        await cursors.insert_submitted.wait()  # queued on the connection's thread, which waits for the lock
        task.cancel()  # cancels the await on that statement
    finally:
        holder.execute("COMMIT")  # the cancelled INSERT goes on in its thread (and the rollback after it)
        holder.close()
    with pytest.raises(asyncio.CancelledError):
        await task


# Stock: the fault the fix is for (if SQLAlchemy fixes it, the patch can go). Patched: the fix.
BOTH = pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])


@BOTH
async def test_a_failed_statements_cursor(tmp_path, stock_adapter, cursors, patched):
    if patched:
        close_cursors_in_their_thread()
    path, engine = db(tmp_path)
    await fail_a_statement(engine)
    await settled(cursors)
    assert [is_closed(c) for c in cursors.of("INSERT")] == [patched]
    if patched:
        assert all(is_closed(c) for _, c in cursors)
    await engine.dispose()


@BOTH
async def test_a_cancelled_statements_cursor(tmp_path, stock_adapter, cursors, patched):
    if patched:
        close_cursors_in_their_thread()
    path, engine = db(tmp_path)
    await cancel_a_statement_waiting_for_the_lock(engine, path, cursors)
    await settled(cursors)
    assert [is_closed(c) for c in cursors.of("INSERT")] == [patched]
    if patched:  # closed on its own thread, behind the statement that was still running there
        assert all(is_closed(c) for _, c in cursors)
    with sqlite3.connect(path) as c:  # the cancelled write ran once the lock was free, or not at all
        assert c.execute("SELECT id FROM t ORDER BY id").fetchall() in ([(1,), (2,)], [(1,), (2,), (3,)])
    await engine.dispose()


async def test_the_patched_adapter_still_reads_and_writes(tmp_path, stock_adapter, cursors):
    close_cursors_in_their_thread()
    path, engine = db(tmp_path)
    async with engine.begin() as conn:
        res = await conn.execute(sa.text("INSERT INTO t VALUES (5, 'x')"))
        assert res.rowcount == 1
        await conn.execute(sa.text("INSERT INTO t VALUES (:id, :v)"), [{"id": 6, "v": "y"}, {"id": 7, "v": "z"}])
        rows = (await conn.execute(sa.text("SELECT id, v FROM t ORDER BY id"))).all()
    assert [tuple(r) for r in rows] == [(1, "a"), (5, "x"), (6, "y"), (7, "z")]
    await settled(cursors)
    assert len(cursors.of("INSERT")) == 2 and all(is_closed(c) for _, c in cursors)
    await engine.dispose()


@pytest.fixture
def begin_as_shipped():
    """Prefect's SQLite ``begin_transaction`` as shipped, restored after the test."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    if AioSqliteConfiguration.__dict__.get("_bgtasks_begins_immediate"):
        pytest.skip("begin_transaction is already patched in this process; the stock behaviour cannot be seen")
    saved = AioSqliteConfiguration.__dict__["begin_transaction"]
    yield AioSqliteConfiguration
    AioSqliteConfiguration.begin_transaction = saved
    if "_bgtasks_begins_immediate" in AioSqliteConfiguration.__dict__:
        delattr(AioSqliteConfiguration, "_bgtasks_begins_immediate")


@BOTH
async def test_a_transaction_that_reads_then_writes_is_not_refused_by_a_write_in_between(
    tmp_path: Path, begin_as_shipped, patched: bool
) -> None:
    """Stock: Prefect's deferred transaction reads, another connection writes, and its own
    write is refused at once ("database is locked": the server's 503, the client's 2 s
    retry). Immediate: the transaction holds the write lock from its BEGIN, so the other
    writer waits (here, with no busy timeout, it is refused) and the transaction's write goes in."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    from bgtasks.prefect_server import immediate_write_transactions

    if patched:
        immediate_write_transactions()
    path = tmp_path / "prefect.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode = WAL")
        setup.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, who TEXT)")
    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{path}")
    engine = await config.engine()
    other = sqlite3.connect(path, timeout=0, isolation_level=None)

    def other_writes() -> None:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO runs (who) VALUES ('other')")
        other.execute("COMMIT")

    try:
        session = await config.session(engine)
        async with session:
            if patched:
                async with config.begin_transaction(session):
                    await session.execute(sa.text("SELECT count(*) FROM runs"))
                    with pytest.raises(sqlite3.OperationalError, match="locked"):
                        other_writes()
                    await session.execute(sa.text("INSERT INTO runs (who) VALUES ('server')"))
            else:
                with pytest.raises(sa.exc.OperationalError, match="locked"):
                    async with config.begin_transaction(session):
                        await session.execute(sa.text("SELECT count(*) FROM runs"))
                        other_writes()
                        await session.execute(sa.text("INSERT INTO runs (who) VALUES ('server')"))
        rows = [r[0] for r in other.execute("SELECT who FROM runs ORDER BY id")]
        assert rows == (["server"] if patched else ["other"])
    finally:
        other.close()
        await engine.dispose()


def test_the_servers_background_worker_checks_for_work_once_a_second() -> None:
    """Docket's default (4 checks a second) cost the idle embedded server about 1 % of a core."""
    from datetime import timedelta

    from docket import Docket
    from prefect.server.api import background_workers

    from bgtasks.prefect_server import DOCKET_CHECK_S, calm_background_worker

    calm_background_worker()
    calm_background_worker()  # idempotent: one subclass, not two
    worker = background_workers.Worker(Docket(name="bgtasks-test", url="memory://"))
    assert DOCKET_CHECK_S == 1.0
    assert worker.minimum_check_interval == worker.scheduling_resolution == timedelta(seconds=DOCKET_CHECK_S)
    assert background_workers.Worker.__mro__[1].__name__ == "Worker" and background_workers.Worker.__mro__[1].__module__.startswith("docket")
