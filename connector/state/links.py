"""Cross-references: Salesforce account <-> billing customer per billing account, and orders.

Look-ups take iterables of ids and run one query per chunk of `LOOKUP_CHUNK` ids; writes take
whole pages in one statement with many parameter sets. What this module must never do: let one
customer be linked to two accounts of one billing account (unless one was merged away).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from connector.errors import ConflictError
from connector.state import schema as t
from connector.state.database import Database, chunks, utcnow
from connector.state.records import Link, OrderLink


class LinkRepository:
    """`store.links`: the cross-references and the orders seen for each account."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get_many(self, billing_account: str, account_ids: Iterable[str]) -> dict[str, Link]:
        out: dict[str, Link] = {}
        with self._db.connect() as conn:
            for chunk in chunks(account_ids):
                query = sa.select(t.links).where(
                    t.links.c.billing_account == billing_account, t.links.c.account_id.in_(chunk)
                )
                for row in conn.execute(query):
                    out[row.account_id] = link_record(row)
        return out

    def get(self, billing_account: str, account_id: str) -> Link | None:
        return self.get_many(billing_account, [account_id]).get(account_id)

    def by_customer(self, billing_account: str, customer_id: str) -> Link | None:
        # A merged-away account's link may share the customer with the survivor's: the link in
        # use comes first.
        query = (
            sa.select(t.links)
            .where(
                t.links.c.billing_account == billing_account, t.links.c.customer_id == customer_id
            )
            .order_by(sa.case((t.links.c.status == "merged", 1), else_=0), t.links.c.account_id)
        )
        with self._db.connect() as conn:
            row = conn.execute(query).first()
        return link_record(row) if row is not None else None

    def iter(
        self, billing_account: str, *, status: str | None = None, batch: int = 2000
    ) -> Iterator[Link]:
        """Every link of a billing account in account-id order, read `batch` rows at a time.

        Each batch is its own short read, so no snapshot or cursor stays open between yields.
        """
        after = ""
        while True:
            query = (
                sa.select(t.links)
                .where(t.links.c.billing_account == billing_account, t.links.c.account_id > after)
                .order_by(t.links.c.account_id)
                .limit(batch)
            )
            if status is not None:
                query = query.where(t.links.c.status == status)
            with self._db.connect() as conn:
                rows = [link_record(row) for row in conn.execute(query)]
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].account_id

    def fingerprints_in_use(self, billing_account: str) -> set[str]:
        """The mapping fingerprints active links were last written with (one query, no rows)."""
        query = (
            sa.select(t.links.c.mapping_fingerprint)
            .where(
                t.links.c.billing_account == billing_account,
                t.links.c.status == "active",
                t.links.c.mapping_fingerprint.is_not(None),
            )
            .distinct()
        )
        with self._db.connect() as conn:
            return {str(fp) for fp in conn.execute(query).scalars()}

    def counts(self, billing_account: str) -> dict[str, int]:
        """Links per status."""
        query = (
            sa.select(t.links.c.status, sa.func.count())
            .where(t.links.c.billing_account == billing_account)
            .group_by(t.links.c.status)
        )
        with self._db.connect() as conn:
            return {status: int(n) for status, n in conn.execute(query)}

    def save(self, links: Iterable[Link]) -> None:
        """Insert or update links by (billing_account, account_id); first_synced_at is kept.

        Raises `ConflictError` (code customer_already_linked) and writes nothing if a customer
        is already linked to another account of the same billing account whose link is not
        merged away.
        """
        now = utcnow()
        by_key: dict[tuple[str, str], Link] = {}
        for link in links:
            by_key[(link.billing_account, link.account_id)] = link
        if not by_key:
            return
        # Links merged away are written first, so a survivor taking over their customer in the
        # same batch never meets the unique index while both are still in use.
        ordered = sorted(by_key.values(), key=lambda link: link.status != "merged")
        rows = [_link_values(link, now) for link in ordered]
        update = [
            c.name
            for c in t.links.columns
            if c.name not in ("billing_account", "account_id", "first_synced_at")
        ]
        with self._db.connect(write=True) as conn:
            _refuse_customer_reuse(conn, list(by_key.values()))
            conn.execute(self._db.upsert(t.links, ["billing_account", "account_id"], update), rows)

    def set_status(self, billing_account: str, account_id: str, status: str) -> bool:
        """Set one link's status; False if there is no such link."""
        with self._db.connect(write=True) as conn:
            result = conn.execute(
                t.links.update()
                .where(
                    t.links.c.billing_account == billing_account,
                    t.links.c.account_id == account_id,
                )
                .values(status=status)
            )
        return result.rowcount > 0

    def mark_written_back(self, billing_account: str, account_ids: Iterable[str]) -> None:
        with self._db.connect(write=True) as conn:
            for chunk in chunks(account_ids):
                conn.execute(
                    t.links.update()
                    .where(
                        t.links.c.billing_account == billing_account,
                        t.links.c.account_id.in_(chunk),
                    )
                    .values(writeback_pending=False)
                )

    def pending_writebacks(self, billing_account: str, limit: int = 200) -> list[Link]:
        """Active links whose customer id is not yet confirmed on the Salesforce Account."""
        query = (
            sa.select(t.links)
            .where(
                t.links.c.billing_account == billing_account,
                t.links.c.writeback_pending.is_(True),
                t.links.c.status == "active",
            )
            .order_by(t.links.c.last_synced_at, t.links.c.account_id)
            .limit(limit)
        )
        with self._db.connect() as conn:
            return [link_record(row) for row in conn.execute(query)]

    # --- orders -------------------------------------------------------------------------------

    def save_order_links(self, rows: Iterable[OrderLink]) -> None:
        """Insert or update order -> account/customer rows; first_seen_at is kept."""
        now = utcnow()
        by_key = {(r.billing_account, r.order_id): r for r in rows}
        if not by_key:
            return
        values = [
            {
                "billing_account": r.billing_account,
                "order_id": r.order_id,
                "account_id": r.account_id,
                "customer_id": r.customer_id,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for r in by_key.values()
        ]
        stmt = self._db.upsert(
            t.order_links,
            ["billing_account", "order_id"],
            ["account_id", "customer_id", "last_seen_at"],
        )
        with self._db.connect(write=True) as conn:
            conn.execute(stmt, values)

    def order_links(self, billing_account: str, order_ids: Iterable[str]) -> dict[str, OrderLink]:
        out: dict[str, OrderLink] = {}
        with self._db.connect() as conn:
            for chunk in chunks(order_ids):
                query = sa.select(t.order_links).where(
                    t.order_links.c.billing_account == billing_account,
                    t.order_links.c.order_id.in_(chunk),
                )
                for row in conn.execute(query):
                    out[row.order_id] = OrderLink(
                        billing_account=row.billing_account,
                        order_id=row.order_id,
                        account_id=row.account_id,
                        customer_id=row.customer_id,
                    )
        return out


def _refuse_customer_reuse(conn: Connection, links: list[Link]) -> None:
    """One customer per account per billing account among links not merged away (the partial
    unique index uq_links_billing_account_customer_id); say which account holds it instead of
    failing on the index."""
    merged_here = {(k.billing_account, k.account_id) for k in links if k.status == "merged"}
    claimed: dict[tuple[str, str], Link] = {}
    for link in links:
        if link.status == "merged":
            continue
        other = claimed.setdefault((link.billing_account, link.customer_id), link)
        if other.account_id != link.account_id:
            raise _customer_taken(link, other.account_id)
    by_account: dict[str, dict[str, Link]] = {}
    for (billing_account, customer_id), link in claimed.items():
        by_account.setdefault(billing_account, {})[customer_id] = link
    for billing_account, wanted in by_account.items():
        for chunk in chunks(wanted):
            query = sa.select(t.links.c.customer_id, t.links.c.account_id).where(
                t.links.c.billing_account == billing_account,
                t.links.c.customer_id.in_(chunk),
                t.links.c.status != "merged",
            )
            for customer_id, holder in conn.execute(query):
                if holder == wanted[customer_id].account_id:
                    continue
                if (billing_account, holder) in merged_here:
                    continue  # this batch merges the holder away first (see save)
                raise _customer_taken(wanted[customer_id], holder)


def _customer_taken(link: Link, holder: str) -> ConflictError:
    return ConflictError(
        f"customer {link.customer_id} in billing account {link.billing_account} is already "
        f"linked to account {holder}; refusing to also link it to {link.account_id}",
        code="customer_already_linked",
        account_id=link.account_id,
    )


def _link_values(link: Link, now: datetime) -> dict[str, Any]:
    return {
        "billing_account": link.billing_account,
        "account_id": link.account_id,
        "customer_id": link.customer_id,
        "status": link.status,
        "payload_hash": link.payload_hash,
        "payload": link.payload,
        "mapping_fingerprint": link.mapping_fingerprint,
        "basis_order_id": link.basis_order_id,
        "basis_order_activated_at": link.basis_order_activated_at,
        "writeback_pending": link.writeback_pending,
        "first_synced_at": link.first_synced_at or now,
        "last_synced_at": link.last_synced_at or now,
    }


def link_record(row: Row[Any]) -> Link:
    return Link(
        billing_account=row.billing_account,
        account_id=row.account_id,
        customer_id=row.customer_id,
        status=row.status,
        payload_hash=row.payload_hash,
        payload=row.payload,
        mapping_fingerprint=row.mapping_fingerprint,
        basis_order_id=row.basis_order_id,
        basis_order_activated_at=row.basis_order_activated_at,
        writeback_pending=bool(row.writeback_pending),
        first_synced_at=row.first_synced_at,
        last_synced_at=row.last_synced_at,
    )
