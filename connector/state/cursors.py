"""Named cursors: how far each incremental read has got (a Salesforce timestamp or an Id).

What this module must never do: interpret a cursor's value; the engine decides what it means.
"""

from __future__ import annotations

import sqlalchemy as sa

from connector.state import schema as t
from connector.state.database import Database, utcnow

_GET = sa.select(t.cursors.c.value).where(t.cursors.c.name == sa.bindparam("name"))


class CursorRepository:
    """`store.cursors`: name -> value."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, name: str) -> str | None:
        with self._db.connect() as conn:
            value: str | None = conn.execute(_GET, {"name": name}).scalar()
        return value

    def set(self, name: str, value: str) -> None:
        stmt = self._db.upsert(t.cursors, ("name",), ("value", "updated_at"))
        with self._db.connect(write=True) as conn:
            conn.execute(stmt, [{"name": name, "value": value, "updated_at": utcnow()}])
