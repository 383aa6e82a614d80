"""The state tables as SQLAlchemy Core metadata, and the column types they share.

This is the shape the queries in store.py are written against; the database itself is created
and changed only by the Alembic migrations in `migrations/versions/`. A change here without a
new migration is a bug (tests/test_state_migrations.py compares the two). Never import the
engine or any adapter from here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps `timestamptz`; SQLite has no time zones, so the value is stored as naive UTC
    in SQLAlchemy's fixed-width text format (which sorts and compares correctly as text) and
    comes back aware. A naive datetime is refused: guessing its zone is how audit trails drift.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value!r}: the state store only takes aware datetimes"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON text on SQLite, jsonb on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def serial_type() -> sa.types.TypeEngine[int]:
    """A 64-bit surrogate key; SQLite only auto-increments a column declared INTEGER."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


# Naming convention so constraint names are the same on both backends and in migrations.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

BA = 64  # billing account id (config allows 64)
SFID = 18  # Salesforce ids are 18 characters; 15-character ids are widened by the Source
EXT = 255  # ids chosen by a billing system

links = sa.Table(
    "links",
    metadata,
    sa.Column("billing_account", sa.String(BA), primary_key=True),
    sa.Column("account_id", sa.String(SFID), primary_key=True),
    sa.Column("customer_id", sa.String(EXT), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload_hash", sa.String(128)),
    sa.Column("payload", json_type()),
    sa.Column("mapping_fingerprint", sa.String(128)),
    sa.Column("basis_order_id", sa.String(SFID)),
    sa.Column("basis_order_activated_at", sa.String(64)),
    sa.Column("writeback_pending", sa.Boolean(), nullable=False),
    sa.Column("first_synced_at", UTCDateTime(), nullable=False),
    sa.Column("last_synced_at", UTCDateTime(), nullable=False),
    # In a sharing group (Stripe's, or a Chargebee site's entities with customer sharing): the
    # member that created the customer and writes it (for Chargebee, the primary entity's
    # account); NULL for the link of that member itself, or outside a group (0003).
    sa.Column("shared_from", sa.String(BA), nullable=True),
    # One customer per account per billing account, among links still in use: the link of an
    # account merged away is kept (status 'merged') while an admin may give its customer to the
    # surviving account.
    sa.Index(
        "uq_links_billing_account_customer_id",
        "billing_account",
        "customer_id",
        unique=True,
        sqlite_where=sa.text("status != 'merged'"),
        postgresql_where=sa.text("status != 'merged'"),
    ),
    sa.Index(None, "billing_account", "status"),
    sa.Index(None, "billing_account", "writeback_pending"),
)

order_links = sa.Table(
    "order_links",
    metadata,
    sa.Column("billing_account", sa.String(BA), primary_key=True),
    sa.Column("order_id", sa.String(SFID), primary_key=True),
    sa.Column("account_id", sa.String(SFID), nullable=False),
    sa.Column("customer_id", sa.String(EXT), nullable=False),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Index(None, "billing_account", "account_id"),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# What the connector last applied of a Salesforce record's fields (a digest of the fields the
# mappings read from it, write-back fields as written): a change that leaves them as they were
# (the connector's own write-back, an edit of a field nothing reads) is recognised and skipped.
source_digests = sa.Table(
    "source_digests",
    metadata,
    sa.Column("sobject", sa.String(64), primary_key=True),
    sa.Column("record_id", sa.String(SFID), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("dry_run", sa.Boolean(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("counts", json_type(), nullable=False),
    sa.Column("error", sa.Text()),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer()),
    # The billing accounts the run covered, comma-separated (0002); NULL for older runs.
    sa.Column("partition", sa.String(255)),
    sa.Index(None, "started_at"),
    sa.Index(None, "status"),
)

record_outcomes = sa.Table(
    "record_outcomes",
    metadata,
    sa.Column("id", serial_type(), primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(32), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("billing_account", sa.String(BA), nullable=False),
    sa.Column("account_id", sa.String(SFID), nullable=False),
    sa.Column("order_id", sa.String(SFID)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("customer_id", sa.String(EXT)),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text()),
    sa.Column("changed_fields", json_type(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index(None, "run_id"),
    sa.Index(None, "outcome", "at"),
    sa.Index(None, "billing_account", "account_id"),
)

retry_queue = sa.Table(
    "retry_queue",
    metadata,
    sa.Column("billing_account", sa.String(BA), primary_key=True),
    sa.Column("account_id", sa.String(SFID), primary_key=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_error", sa.Text()),
    sa.Column("first_failed_at", UTCDateTime(), nullable=False),
    sa.Index(None, "billing_account", "next_attempt_at"),
)

intents = sa.Table(
    "intents",
    metadata,
    sa.Column("billing_account", sa.String(BA), primary_key=True),
    sa.Column("account_id", sa.String(SFID), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), nullable=False),
    sa.Column("payload_hash", sa.String(128), nullable=False),
    # The exact parameters sent with the key: a retried create must send the same ones.
    sa.Column("payload", json_type()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

conflicts = sa.Table(
    "conflicts",
    metadata,
    sa.Column("id", serial_type(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("billing_account", sa.String(BA), nullable=False),
    sa.Column("account_id", sa.String(SFID), nullable=False),
    sa.Column("other_account_id", sa.String(SFID)),
    sa.Column("customer_id", sa.String(EXT)),
    sa.Column("details", json_type(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("resolution", sa.Text()),
    sa.Column("resolved_by", sa.String(255)),
    sa.Column("resolved_at", UTCDateTime()),
    sa.Index(None, "status", "billing_account"),
    # At most one open conflict of a kind per account; resolved ones accumulate as history.
    sa.Index(
        "uq_conflicts_open",
        "kind",
        "billing_account",
        "account_id",
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    ),
)

locks = sa.Table(
    "locks",
    metadata,
    # Who holds a PostgreSQL advisory lock, for the "lock held" message. The advisory lock is
    # what excludes; a row left by a crashed holder is overwritten by the next one.
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer()),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime()),
)
