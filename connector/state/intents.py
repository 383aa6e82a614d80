"""Create intents: a customer create about to be sent, kept until its link is saved.

An open intent after a crash means "a create may have reached billing": the next run replays it
with the same idempotency key (or looks the customer up) instead of creating a second customer.
What this module must never do: drop an intent except together with the link that settles it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from connector.state import schema as t
from connector.state.database import Database
from connector.state.links import LinkRepository
from connector.state.records import Intent, Link, OrderLink


class IntentRepository:
    """`store.intents`: at most one open create per account per billing account."""

    def __init__(self, db: Database, links: LinkRepository) -> None:
        self._db = db
        self._links = links

    def record(self, intent: Intent) -> Intent:
        """Record a create about to be sent, replacing any earlier intent for the account.

        Whether an earlier intent must be replayed instead (same key, same payload) is the
        engine's decision, taken before it records a new one; what is stored here is always the
        key and payload actually sent next. Returns the intent as stored.
        """
        stmt = self._db.upsert(
            t.intents,
            ["billing_account", "account_id"],
            ["idempotency_key", "payload_hash", "payload", "created_at"],
        )
        row = {
            "billing_account": intent.billing_account,
            "account_id": intent.account_id,
            "idempotency_key": intent.idempotency_key,
            "payload_hash": intent.payload_hash,
            "payload": intent.payload,
            "created_at": intent.created_at,
        }
        with self._db.connect(write=True) as conn:
            conn.execute(stmt, [row])
            current = _select_intent(conn, intent.billing_account, intent.account_id)
        assert current is not None
        return current

    def get(self, billing_account: str, account_id: str) -> Intent | None:
        with self._db.connect() as conn:
            return _select_intent(conn, billing_account, account_id)

    def open(self, billing_account: str) -> list[Intent]:
        i = t.intents
        query = (
            sa.select(i)
            .where(i.c.billing_account == billing_account)
            .order_by(i.c.created_at, i.c.account_id)
        )
        with self._db.connect() as conn:
            return [intent_record(row) for row in conn.execute(query)]

    def complete_create(self, link: Link, order_links: Iterable[OrderLink] = ()) -> None:
        """Save the new link and its orders and drop the intent, all or nothing."""
        rows = list(order_links)
        for row in rows:
            if (row.billing_account, row.account_id) != (link.billing_account, link.account_id):
                raise ValueError(f"order {row.order_id} is not for account {link.account_id}")
        with self._db.transaction():
            self._links.save([link])
            self._links.save_order_links(rows)
            self.drop(link.billing_account, link.account_id)

    def drop(self, billing_account: str, account_id: str) -> None:
        i = t.intents
        with self._db.connect(write=True) as conn:
            conn.execute(
                i.delete().where(
                    i.c.billing_account == billing_account, i.c.account_id == account_id
                )
            )


def _select_intent(conn: Connection, billing_account: str, account_id: str) -> Intent | None:
    i = t.intents
    row = conn.execute(
        sa.select(i).where(i.c.billing_account == billing_account, i.c.account_id == account_id)
    ).first()
    return intent_record(row) if row is not None else None


def intent_record(row: Row[Any]) -> Intent:
    return Intent(
        billing_account=row.billing_account,
        account_id=row.account_id,
        idempotency_key=row.idempotency_key,
        payload_hash=row.payload_hash,
        created_at=row.created_at,
        payload=row.payload,
    )
