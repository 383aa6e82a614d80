"""Cross-references: Salesforce account <-> billing customer per billing account, and orders.

Look-ups take iterables of ids and run one query per chunk of `LOOKUP_CHUNK` ids; writes take
whole pages in one statement with many parameter sets. Statements are built once, at import (or
once per dialect for upserts, see `Database.upsert`), with bind parameters: building a SQLAlchemy
statement costs more CPU than running it on SQLite, and a sync runs these per record. What this module must never do: let one
customer be linked to two accounts of one billing account (unless one was merged away).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Row

from connector.errors import ConflictError
from connector.state import schema as t
from connector.state.database import Database, InIds, chunks, utcnow
from connector.state.records import Link, OrderLink

_L = t.links
_O = t.order_links
_BA: sa.BindParameter[str] = sa.bindparam("ba")

_GET_MANY = sa.select(_L).where(_L.c.billing_account == _BA, InIds(_L.c.account_id))
# A merged-away account's link may share the customer with the survivor's: the link in use
# comes first.
_BY_CUSTOMER = (
    sa.select(_L)
    .where(_L.c.billing_account == _BA, _L.c.customer_id == sa.bindparam("customer_id"))
    .order_by(sa.case((_L.c.status == "merged", 1), else_=0), _L.c.account_id)
    .limit(1)
)
_SHARED_WITH = (
    sa.select(_L.c.billing_account)
    .where(
        _L.c.shared_from == _BA,
        _L.c.account_id == sa.bindparam("account_id"),
        _L.c.status == "active",
    )
    .order_by(_L.c.billing_account)
)
_ITER = (
    sa.select(_L)
    .where(_L.c.billing_account == _BA, _L.c.account_id > sa.bindparam("after"))
    .order_by(_L.c.account_id)
    .limit(sa.bindparam("batch"))
)
_ITER_STATUS = _ITER.where(_L.c.status == sa.bindparam("status"))
_FINGERPRINTS = (
    sa.select(_L.c.mapping_fingerprint)
    .where(
        _L.c.billing_account == _BA,
        _L.c.status == "active",
        _L.c.mapping_fingerprint.is_not(None),
    )
    .distinct()
)
_COUNTS = (
    sa.select(_L.c.status, sa.func.count()).where(_L.c.billing_account == _BA).group_by(_L.c.status)
)
_SET_STATUS = (
    _L.update()
    .where(_L.c.billing_account == _BA, _L.c.account_id == sa.bindparam("acc"))
    .values(status=sa.bindparam("new_status"))
)
_WRITTEN_BACK = (
    _L.update()
    .where(_L.c.billing_account == _BA, InIds(_L.c.account_id))
    .values(writeback_pending=False)
)
_PENDING_WRITEBACKS = (
    sa.select(_L)
    .where(
        _L.c.billing_account == _BA,
        _L.c.writeback_pending.is_(True),
        _L.c.status == "active",
    )
    .order_by(_L.c.last_synced_at, _L.c.account_id)
    .limit(sa.bindparam("limit"))
)
_CUSTOMER_HOLDERS = sa.select(_L.c.customer_id, _L.c.account_id).where(
    _L.c.billing_account == _BA, InIds(_L.c.customer_id), _L.c.status != "merged"
)
# Only what an OrderLink holds: the two timestamps per row are not read back.
_ORDER_LINKS = sa.select(_O.c.order_id, _O.c.account_id, _O.c.customer_id).where(
    _O.c.billing_account == _BA, InIds(_O.c.order_id)
)
_LINK_UPDATE_COLUMNS = tuple(
    c.name for c in _L.columns if c.name not in ("billing_account", "account_id", "first_synced_at")
)
_ORDER_UPDATE_COLUMNS = ("account_id", "customer_id", "last_seen_at")


class LinkRepository:
    """`store.links`: the cross-references and the orders seen for each account."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get_many(self, billing_account: str, account_ids: Iterable[str]) -> dict[str, Link]:
        out: dict[str, Link] = {}
        with self._db.connect() as conn:
            if self._db.dialect == "sqlite":
                # Every link of every page is read here: the driver's rows, converted as the
                # column types would (`_sqlite_link`), skip SQLAlchemy's per-row result
                # processing, a tenth of a re-check's CPU.
                for chunk in chunks(account_ids):
                    params = (billing_account, json.dumps(chunk))
                    for raw in conn.exec_driver_sql(_get_many_sqlite(), params):
                        out[raw[_ACCOUNT]] = _sqlite_link(raw)
                return out
            for chunk in chunks(account_ids):
                for row in conn.execute(_GET_MANY, {"ba": billing_account, "ids": chunk}):
                    out[row.account_id] = link_record(row)
        return out

    def get(self, billing_account: str, account_id: str) -> Link | None:
        return self.get_many(billing_account, [account_id]).get(account_id)

    def by_customer(self, billing_account: str, customer_id: str) -> Link | None:
        with self._db.connect() as conn:
            row = conn.execute(
                _BY_CUSTOMER, {"ba": billing_account, "customer_id": customer_id}
            ).first()
        return link_record(row) if row is not None else None

    def shared_with(self, billing_account: str, account_id: str) -> list[str]:
        """The billing accounts (members of its sharing group) whose links use the customer
        `billing_account` created for `account_id`: for a Chargebee site with customer sharing,
        the entities that use the customer of the primary entity."""
        with self._db.connect() as conn:
            rows = conn.execute(_SHARED_WITH, {"ba": billing_account, "account_id": account_id})
            return [str(r.billing_account) for r in rows]

    def iter(
        self, billing_account: str, *, status: str | None = None, batch: int = 2000
    ) -> Iterator[Link]:
        """Every link of a billing account in account-id order, read `batch` rows at a time.

        Each batch is its own short read, so no snapshot or cursor stays open between yields.
        """
        after = ""
        query = _ITER if status is None else _ITER_STATUS
        while True:
            params: dict[str, object] = {"ba": billing_account, "after": after, "batch": batch}
            if status is not None:
                params["status"] = status
            with self._db.connect() as conn:
                rows = [link_record(row) for row in conn.execute(query, params)]
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].account_id

    def fingerprints_in_use(self, billing_account: str) -> set[str]:
        """The mapping fingerprints active links were last written with (one query, no rows)."""
        with self._db.connect() as conn:
            return {
                str(fp) for fp in conn.execute(_FINGERPRINTS, {"ba": billing_account}).scalars()
            }

    def counts(self, billing_account: str) -> dict[str, int]:
        """Links per status."""
        with self._db.connect() as conn:
            return {status: int(n) for status, n in conn.execute(_COUNTS, {"ba": billing_account})}

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
        stmt = self._db.upsert(t.links, ("billing_account", "account_id"), _LINK_UPDATE_COLUMNS)
        with self._db.connect(write=True) as conn:
            _refuse_customer_reuse(conn, list(by_key.values()))
            self._db.insert_many(conn, stmt, rows)

    def set_status(self, billing_account: str, account_id: str, status: str) -> bool:
        """Set one link's status; False if there is no such link."""
        with self._db.connect(write=True) as conn:
            result = conn.execute(
                _SET_STATUS, {"ba": billing_account, "acc": account_id, "new_status": status}
            )
        return result.rowcount > 0

    def mark_written_back(self, billing_account: str, account_ids: Iterable[str]) -> None:
        with self._db.connect(write=True) as conn:
            for chunk in chunks(account_ids):
                conn.execute(_WRITTEN_BACK, {"ba": billing_account, "ids": chunk})

    def pending_writebacks(self, billing_account: str, limit: int = 200) -> list[Link]:
        """Active links whose customer id is not yet confirmed on the Salesforce Account."""
        with self._db.connect() as conn:
            rows = conn.execute(_PENDING_WRITEBACKS, {"ba": billing_account, "limit": limit})
            return [link_record(row) for row in rows]

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
            t.order_links, ("billing_account", "order_id"), _ORDER_UPDATE_COLUMNS
        )
        with self._db.connect(write=True) as conn:
            self._db.insert_many(conn, stmt, values)

    def order_links(self, billing_account: str, order_ids: Iterable[str]) -> dict[str, OrderLink]:
        out: dict[str, OrderLink] = {}
        with self._db.connect() as conn:
            for chunk in chunks(order_ids):
                params = {"ba": billing_account, "ids": chunk}
                for order_id, account_id, customer_id in conn.execute(_ORDER_LINKS, params):
                    out[order_id] = OrderLink(billing_account, order_id, account_id, customer_id)
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
            params = {"ba": billing_account, "ids": chunk}
            for customer_id, holder in conn.execute(_CUSTOMER_HOLDERS, params):
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
        "shared_from": link.shared_from,
    }


# A row of select(links) holds the Link's fields in the Link's order: link_record builds it by
# position (by name, each of 13 fields is a lookup, for every link of every page).
_LINK_FIELDS = tuple(Link.__dataclass_fields__)
if tuple(c.name for c in _L.columns) != _LINK_FIELDS:  # pragma: no cover - a schema edit
    raise RuntimeError(f"links columns {[c.name for c in _L.columns]} are not Link's fields")
_PENDING = _LINK_FIELDS.index("writeback_pending")


_ACCOUNT = _LINK_FIELDS.index("account_id")
_PAYLOAD = _LINK_FIELDS.index("payload")
_STAMPS = (_LINK_FIELDS.index("first_synced_at"), _LINK_FIELDS.index("last_synced_at"))


@functools.cache
def _get_many_sqlite() -> str:
    compiled = _GET_MANY.compile(dialect=sqlite.dialect())
    if compiled.positiontup != ["ba", "ids"]:  # pragma: no cover - a query edit
        raise RuntimeError(f"_GET_MANY binds {compiled.positiontup}, not ba then ids")
    return compiled.string


def _sqlite_link(raw: Sequence[Any]) -> Link:
    """A Link from a links row as SQLite's driver returns it: the JSON payload as text, the
    flag as 0/1, the stamps as SQLAlchemy's SQLite DATETIME text of naive UTC (UTCDateTime)."""
    values = list(raw)
    if values[_PAYLOAD] is not None:
        values[_PAYLOAD] = json.loads(values[_PAYLOAD])
    values[_PENDING] = bool(values[_PENDING])
    for i in _STAMPS:
        if values[i] is not None:
            values[i] = datetime.fromisoformat(values[i]).replace(tzinfo=UTC)
    return Link(*values)


def link_record(row: Row[Any]) -> Link:
    values = list(row)
    values[_PENDING] = bool(values[_PENDING])
    return Link(*values)
