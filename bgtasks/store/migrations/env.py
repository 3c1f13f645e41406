"""Alembic environment: runs on the connection :meth:`bgtasks.store.Store.migrate` hands over."""

from alembic import context

from bgtasks.store.db import VERSION_TABLE
from bgtasks.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
