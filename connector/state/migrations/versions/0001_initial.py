"""Initial state schema: links, orders, cursors, runs, outcomes, retries, intents, conflicts, locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Tables are spelled out here rather than created from schema.metadata, so this revision keeps
meaning what it meant when later revisions change the metadata. Only the column types are
imported (they are stable and shared by every revision).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from connector.state.schema import UTCDateTime, json_type, serial_type

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("billing_account", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(18), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload_hash", sa.String(128)),
        sa.Column("payload", json_type()),
        sa.Column("mapping_fingerprint", sa.String(128)),
        sa.Column("basis_order_id", sa.String(18)),
        sa.Column("basis_order_activated_at", sa.String(64)),
        sa.Column("writeback_pending", sa.Boolean(), nullable=False),
        sa.Column("first_synced_at", UTCDateTime(), nullable=False),
        sa.Column("last_synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("billing_account", "account_id", name="pk_links"),
    )
    # Unique among links in use; a merged-away account's link keeps its customer id.
    op.create_index(
        "uq_links_billing_account_customer_id",
        "links",
        ["billing_account", "customer_id"],
        unique=True,
        sqlite_where=sa.text("status != 'merged'"),
        postgresql_where=sa.text("status != 'merged'"),
    )
    op.create_index("ix_links_billing_account_status", "links", ["billing_account", "status"])
    op.create_index(
        "ix_links_billing_account_writeback_pending",
        "links",
        ["billing_account", "writeback_pending"],
    )

    op.create_table(
        "order_links",
        sa.Column("billing_account", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(18), nullable=False),
        sa.Column("account_id", sa.String(18), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("billing_account", "order_id", name="pk_order_links"),
    )
    op.create_index(
        "ix_order_links_billing_account_account_id",
        "order_links",
        ["billing_account", "account_id"],
    )

    op.create_table(
        "cursors",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cursors"),
    )

    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("counts", json_type(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer()),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
    )
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "record_outcomes",
        sa.Column("id", serial_type(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("billing_account", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(18), nullable=False),
        sa.Column("order_id", sa.String(18)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(255)),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("changed_fields", json_type(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_record_outcomes"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
            name="fk_record_outcomes_run_id_runs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_record_outcomes_run_id", "record_outcomes", ["run_id"])
    op.create_index("ix_record_outcomes_outcome_at", "record_outcomes", ["outcome", "at"])
    op.create_index(
        "ix_record_outcomes_billing_account_account_id",
        "record_outcomes",
        ["billing_account", "account_id"],
    )

    op.create_table(
        "retry_queue",
        sa.Column("billing_account", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(18), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("first_failed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("billing_account", "account_id", name="pk_retry_queue"),
    )
    op.create_index(
        "ix_retry_queue_billing_account_next_attempt_at",
        "retry_queue",
        ["billing_account", "next_attempt_at"],
    )

    op.create_table(
        "intents",
        sa.Column("billing_account", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(18), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("payload_hash", sa.String(128), nullable=False),
        sa.Column("payload", json_type()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("billing_account", "account_id", name="pk_intents"),
    )

    op.create_table(
        "conflicts",
        sa.Column("id", serial_type(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("billing_account", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(18), nullable=False),
        sa.Column("other_account_id", sa.String(18)),
        sa.Column("customer_id", sa.String(255)),
        sa.Column("details", json_type(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("resolution", sa.Text()),
        sa.Column("resolved_by", sa.String(255)),
        sa.Column("resolved_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_conflicts"),
    )
    op.create_index(
        "ix_conflicts_status_billing_account", "conflicts", ["status", "billing_account"]
    )
    op.create_index(
        "uq_conflicts_open",
        "conflicts",
        ["kind", "billing_account", "account_id"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )

    op.create_table(
        "locks",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer()),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("name", name="pk_locks"),
    )


def downgrade() -> None:
    for table in (
        "locks",
        "conflicts",
        "intents",
        "retry_queue",
        "record_outcomes",
        "runs",
        "cursors",
        "order_links",
        "links",
    ):
        op.drop_table(table)
