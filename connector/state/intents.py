"""Create intents: a customer create about to be sent, kept until its link is saved.

An open intent after a crash means "a create may have reached billing": the next run replays it
with the same idempotency key (or looks the customer up) instead of creating a second customer.
What this module must never do: drop an intent except together with the link that settles it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from connector.state import schema as t
from connector.state.database import Database, InIds, as_utc, chunks
from connector.state.links import LinkRepository
from connector.state.records import Intent, Link, OrderLink

_I = t.intents
_KEY = (_I.c.billing_account == sa.bindparam("ba"), _I.c.account_id == sa.bindparam("acc"))
_GET = sa.select(_I).where(*_KEY)
_DROP = _I.delete().where(*_KEY)
_DROP_MANY = _I.delete().where(_I.c.billing_account == sa.bindparam("ba"), InIds(_I.c.account_id))
_OPEN = (
    sa.select(_I)
    .where(_I.c.billing_account == sa.bindparam("ba"))
    .order_by(_I.c.created_at, _I.c.account_id)
)
_UPDATE_COLUMNS = ("idempotency_key", "payload_hash", "payload", "created_at")


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
        # Not read back: the upsert replaces every column, so the row is this intent with its
        # time in UTC (as the store hands every time back); one query less per create.
        stored = replace(intent, created_at=as_utc(intent.created_at))
        with self._db.connect(write=True) as conn:
            conn.execute(self._upsert(), [_intent_values(stored)])
        return stored

    def record_many(self, intents: Iterable[Intent]) -> None:
        """Record the creates about to be sent for a batch of accounts, in one transaction:
        the form a writer with several requests in flight uses (one commit, not one per row)."""
        rows = [
            _intent_values(i)
            for i in {(i.billing_account, i.account_id): i for i in intents}.values()
        ]
        if rows:
            with self._db.connect(write=True) as conn:
                self._db.insert_many(conn, self._upsert(), rows)

    def get(self, billing_account: str, account_id: str) -> Intent | None:
        with self._db.connect() as conn:
            return _select_intent(conn, billing_account, account_id)

    def open(self, billing_account: str) -> list[Intent]:
        with self._db.connect() as conn:
            return [intent_record(row) for row in conn.execute(_OPEN, {"ba": billing_account})]

    def complete_create(self, link: Link, order_links: Iterable[OrderLink] = ()) -> None:
        """Save the new link and its orders and drop the intent, all or nothing."""
        rows = list(order_links)
        _check_orders(link, rows)
        with self._db.transaction():
            self._links.save([link])
            self._links.save_order_links(rows)
            self.drop(link.billing_account, link.account_id)

    def complete_creates(self, done: Iterable[tuple[Link, Iterable[OrderLink]]]) -> None:
        """`complete_create` for a batch of creates that came back, in one transaction: every
        link, its orders and the dropped intents are written together, or none is."""
        batch = [(link, list(orders)) for link, orders in done]
        for link, orders in batch:
            _check_orders(link, orders)
        if not batch:
            return
        with self._db.transaction():
            self._links.save(link for link, _ in batch)
            self._links.save_order_links(o for _, orders in batch for o in orders)
            with self._db.connect(write=True) as conn:
                conn.execute(
                    _DROP,
                    [{"ba": link.billing_account, "acc": link.account_id} for link, _ in batch],
                )

    def drop(self, billing_account: str, account_id: str) -> None:
        with self._db.connect(write=True) as conn:
            conn.execute(_DROP, {"ba": billing_account, "acc": account_id})

    def drop_many(self, billing_account: str, account_ids: Iterable[str]) -> None:
        """`drop` for a batch of accounts: one `IN` statement per chunk of ids (an executemany
        with a parameter set per account cost more CPU than the creates' other writes)."""
        ids = list(dict.fromkeys(account_ids))
        if ids:
            with self._db.connect(write=True) as conn:
                for chunk in chunks(ids):
                    conn.execute(_DROP_MANY, {"ba": billing_account, "ids": chunk})

    def _upsert(self) -> sa.Insert:
        return self._db.upsert(t.intents, ("billing_account", "account_id"), _UPDATE_COLUMNS)


def _check_orders(link: Link, rows: list[OrderLink]) -> None:
    for row in rows:
        if (row.billing_account, row.account_id) != (link.billing_account, link.account_id):
            raise ValueError(f"order {row.order_id} is not for account {link.account_id}")


def _intent_values(intent: Intent) -> dict[str, Any]:
    return {
        "billing_account": intent.billing_account,
        "account_id": intent.account_id,
        "idempotency_key": intent.idempotency_key,
        "payload_hash": intent.payload_hash,
        "payload": intent.payload,
        "created_at": intent.created_at,
    }


def _select_intent(conn: Connection, billing_account: str, account_id: str) -> Intent | None:
    row = conn.execute(_GET, {"ba": billing_account, "acc": account_id}).first()
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
