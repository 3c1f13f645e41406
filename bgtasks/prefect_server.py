"""Prefect's server, with two fixes for its embedded SQLite: ``python -m bgtasks.prefect_server server start``.

It runs Prefect's own CLI (``python -m prefect``) after :func:`close_cursors_in_their_thread`
and :func:`immediate_write_transactions` (its docstring says what that one fixes).

The fault it fixes (measured with the 30-minute soak, docs/scaling.md). SQLAlchemy's
aiosqlite adapter opens an aiosqlite cursor per statement and closes it only when the
statement succeeds. A statement that fails ("database is locked") or whose request is
cancelled leaves its cursor open, and the cursor is freed later by the garbage
collector, which runs on the event loop's thread. Freeing a cursor whose statement is
still in use resets that statement (CPython's ``sqlite3`` cursor dealloc calls
``sqlite3_reset``), and that waits for the connection's mutex, which the connection's
own aiosqlite thread holds while it waits for the write lock, up to SQLite's busy
timeout (Prefect sets 60 s). So the whole server froze: the transaction that held the
write lock could not commit, because committing needs the event loop, and everything
waited until the busy timeout expired. py-spy showed the loop's thread in
``cursor_dealloc -> sqlite3_reset -> pthread_mutex_lock`` during each stall.

The fix closes every such cursor on its connection's own thread (queued behind the
statement that is still running there), so nothing is left for the event loop's thread
to reset. PostgreSQL is untouched.
"""

from __future__ import annotations

import logging
from typing import Any

_PATCHED = "_bgtasks_closes_cursors"
_PATCHED_BEGIN = "_bgtasks_begins_immediate"
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

    Prefect begins most write transactions DEFERRED: the first read takes a read lock,
    and the first write must then upgrade it. If another connection committed a write
    in between, SQLite refuses the upgrade at once ("database is locked", no busy wait),
    the server answers 503 and Prefect's client retries after about 2 s. Creating a
    run from a deployment reads the deployment first, so on the embedded server a
    run-now that met any other write (the events and automations of the run before it)
    took 2 s instead of 0.3 (measured: 11 of 20 sequential run-nows). IMMEDIATE takes
    the write lock at BEGIN and waits for it (busy timeout), as Prefect already does
    where it asks for ``with_for_update``; SQLite writes one at a time anyway. Reads
    outside explicit transactions are untouched.
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


def main() -> None:
    close_cursors_in_their_thread()
    immediate_write_transactions()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
