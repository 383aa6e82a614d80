"""Alembic environment for the state store.

Migrations run only through `StateStore.upgrade()` (or `billing-connector db upgrade`), which
hands over an open connection in `config.attributes["connection"]`; there is no alembic.ini and
no URL here, so a migration can never reach a database other than the one the store opened.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from connector.state.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError(
        "state migrations run through the store: use `billing-connector db upgrade` "
        "or StateStore.upgrade()"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
