"""Conflicts: what the connector refused to decide (merges, customers linked elsewhere) and how
an admin resolved each.

What this module must never do: open a second conflict of one kind for one account while the
first is open, or resolve one twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from connector.errors import ConfigError
from connector.state import schema as t
from connector.state.database import Database, utcnow
from connector.state.records import Conflict


class ConflictResolutionError(ConfigError):
    """A conflict cannot be resolved: there is no such conflict, or it is already resolved."""

    def __init__(self, message: str, *, conflict_id: int) -> None:
        self.conflict_id = conflict_id
        super().__init__(message)


class ConflictRepository:
    """`store.conflicts`: open and resolved conflicts."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def open(
        self,
        kind: str,
        *,
        billing_account: str,
        account_id: str,
        other_account_id: str | None = None,
        customer_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Conflict:
        """Open a conflict, or return the one of this kind already open for the account."""
        c = t.conflicts
        is_open = c.c.status == "open"
        row = {
            "kind": kind,
            "billing_account": billing_account,
            "account_id": account_id,
            "other_account_id": other_account_id,
            "customer_id": customer_id,
            "details": dict(details or {}),
            "status": "open",
            "created_at": utcnow(),
        }
        keys = ["kind", "billing_account", "account_id"]
        # The partial unique index uq_conflicts_open makes this safe against a concurrent opener.
        stmt: sa.Insert
        if self._db.dialect == "postgresql":
            stmt = postgresql.insert(c).on_conflict_do_nothing(
                index_elements=keys, index_where=is_open
            )
        else:
            stmt = sqlite.insert(c).on_conflict_do_nothing(index_elements=keys, index_where=is_open)
        with self._db.connect(write=True) as conn:
            conn.execute(stmt, [row])
            found = conn.execute(
                sa.select(c).where(
                    c.c.kind == kind,
                    c.c.billing_account == billing_account,
                    c.c.account_id == account_id,
                    is_open,
                )
            ).one()
        return conflict_record(found)

    def list(self, status: str | None = "open") -> list[Conflict]:
        query = sa.select(t.conflicts).order_by(t.conflicts.c.id)
        if status is not None:
            query = query.where(t.conflicts.c.status == status)
        with self._db.connect() as conn:
            return [conflict_record(row) for row in conn.execute(query)]

    def get(self, id: int) -> Conflict | None:
        with self._db.connect() as conn:
            row = conn.execute(sa.select(t.conflicts).where(t.conflicts.c.id == id)).first()
        return conflict_record(row) if row is not None else None

    def resolve(self, id: int, *, resolution: str, by: str) -> Conflict:
        """Close an open conflict, recording who resolved it, when and how."""
        c = t.conflicts
        with self._db.connect(write=True) as conn:
            result = conn.execute(
                c.update()
                .where(c.c.id == id, c.c.status == "open")
                .values(
                    status="resolved", resolution=resolution, resolved_by=by, resolved_at=utcnow()
                )
            )
            row = conn.execute(sa.select(c).where(c.c.id == id)).first()
        if row is None:
            raise ConflictResolutionError(f"there is no conflict #{id}", conflict_id=id)
        conflict = conflict_record(row)
        if result.rowcount == 0:
            raise ConflictResolutionError(
                f"conflict #{id} was already resolved by {conflict.resolved_by} at "
                f"{_when(conflict.resolved_at)}: {conflict.resolution}",
                conflict_id=id,
            )
        return conflict

    def held_accounts(self, billing_account: str) -> set[str]:
        """Accounts with an open conflict: the engine leaves them alone until it is resolved."""
        c = t.conflicts
        query = sa.select(c.c.account_id).where(
            c.c.billing_account == billing_account, c.c.status == "open"
        )
        with self._db.connect() as conn:
            return set(conn.execute(query).scalars())


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at is not None else "an unknown time"


def conflict_record(row: Row[Any]) -> Conflict:
    return Conflict(
        id=int(row.id),
        kind=row.kind,
        billing_account=row.billing_account,
        account_id=row.account_id,
        other_account_id=row.other_account_id,
        customer_id=row.customer_id,
        details=dict(row.details or {}),
        status=row.status,
        created_at=row.created_at,
        resolution=row.resolution,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
    )
