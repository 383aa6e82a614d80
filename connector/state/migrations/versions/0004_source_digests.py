"""Digests of what was last applied of each Salesforce record, so an incremental sync skips
changes that left every field it reads as it was (above all the connector's own write-backs).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from connector.state.schema import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "source_digests",
        sa.Column("sobject", sa.String(64), primary_key=True),
        sa.Column("record_id", sa.String(18), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("source_digests")
