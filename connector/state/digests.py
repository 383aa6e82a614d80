"""Digests of what the connector last applied of Salesforce records: sobject, Id -> digest.

What this module must never do: compute or interpret a digest; the engine decides what one covers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from connector.state import schema as t
from connector.state.database import Database, InIds, chunks, utcnow

_GET_MANY = sa.select(t.source_digests.c.record_id, t.source_digests.c.digest).where(
    t.source_digests.c.sobject == sa.bindparam("sobject"),
    InIds(t.source_digests.c.record_id),
)


class DigestRepository:
    """`store.digests`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get_many(self, sobject: str, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if not ids:
            return out
        with self._db.connect() as conn:
            for chunk in chunks(ids):
                for r in conn.execute(_GET_MANY, {"sobject": sobject, "ids": chunk}):
                    out[str(r[0])] = str(r[1])
        return out

    def set_many(self, sobject: str, digests: Mapping[str, str]) -> None:
        if not digests:
            return
        stmt = self._db.upsert(t.source_digests, ("sobject", "record_id"), ("digest", "updated_at"))
        now = utcnow()
        rows = [
            {"sobject": sobject, "record_id": rid, "digest": d, "updated_at": now}
            for rid, d in digests.items()
        ]
        with self._db.connect(write=True) as conn:
            self._db.insert_many(conn, stmt, rows)
