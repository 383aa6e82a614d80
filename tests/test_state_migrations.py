"""The schema comes from Alembic migrations, upgrades from empty, and matches schema.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from state_fixtures import db_url

from connector.errors import ConfigError
from connector.state import schema
from connector.state.store import UPGRADE_COMMAND, StateStore

__all__ = ["db_url"]  # fixture, imported for pytest


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    with StateStore.open(db_url) as store:
        assert store.current_revision() == StateStore.head_revision() == "0004"
        with store._engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    assert tables >= {*schema.metadata.tables, "alembic_version"}


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    StateStore.open(db_url).close()
    with StateStore.open(db_url) as store:
        store.upgrade()
        assert store.current_revision() == StateStore.head_revision()


def test_migrated_schema_matches_schema_py(db_url: str) -> None:
    with StateStore.open(db_url) as store, store._engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, schema.metadata) == []


def test_without_auto_migrate_an_empty_database_names_the_upgrade_command(db_url: str) -> None:
    with pytest.raises(
        ConfigError, match=f"(no schema yet|does not exist); run `{UPGRADE_COMMAND}`"
    ):
        StateStore.open(db_url, auto_migrate=False)
    StateStore.open(db_url).close()
    with StateStore.open(db_url, auto_migrate=False) as store:
        assert store.current_revision() == StateStore.head_revision()


def test_without_auto_migrate_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with pytest.raises(ConfigError, match=f"{path} does not exist; run `{UPGRADE_COMMAND}`"):
        StateStore.open(f"sqlite:///{path}", auto_migrate=False)
    assert not path.exists()
    path.touch()
    with pytest.raises(ConfigError, match=f"{path} has no schema yet; run `{UPGRADE_COMMAND}`"):
        StateStore.open(f"sqlite:///{path}", auto_migrate=False)


def test_a_schema_behind_head_names_the_upgrade_command(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    StateStore.open(db_url).close()
    # "Behind" is simulated by a newer head.
    monkeypatch.setattr(StateStore, "head_revision", staticmethod(lambda: "0005"))
    with pytest.raises(
        ConfigError,
        match=f"at schema revision 0004 but this version needs 0005; run `{UPGRADE_COMMAND}`",
    ):
        StateStore.open(db_url, auto_migrate=False)


def test_a_schema_from_a_newer_version_is_refused(db_url: str) -> None:
    with StateStore.open(db_url) as store, store._engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(ConfigError, match=r"revision ffff, which this version .* does not know"):
        StateStore.open(db_url, auto_migrate=False)
    with pytest.raises(ConfigError, match="newer version"):
        StateStore.open(db_url)


def test_unsupported_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported database"):
        StateStore.open("mysql://u@h/db")
    with pytest.raises(ConfigError, match="not a database URL"):
        StateStore.open("state.db")


def test_0003_keeps_links_of_0002_and_records_which_member_a_link_shares_from(
    db_url: str,
) -> None:
    from datetime import UTC, datetime

    from alembic import command
    from alembic.config import Config as AlembicConfig

    from connector.state.records import Link
    from connector.state.store import MIGRATIONS_DIR

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        now = datetime(2026, 11, 30, tzinfo=UTC).replace(tzinfo=None)
        conn.execute(
            sa.text(
                "INSERT INTO links (billing_account, account_id, customer_id, status, "
                "writeback_pending, first_synced_at, last_synced_at) VALUES "
                "('cb.us', '001000000000001AAA', 'sf-1', 'active', false, :now, :now)"
            ),
            {"now": now},
        )
    engine.dispose()
    with StateStore.open(db_url) as store:
        assert store.current_revision() == StateStore.head_revision()
        old = store.links.get("cb.us", "001000000000001AAA")
        assert old is not None and old.customer_id == "sf-1" and old.shared_from is None
        store.links.save(
            [
                Link("cb.eu", "001000000000001AAA", "sf-1", shared_from="cb.us"),
                Link("cb.uk", "001000000000001AAA", "sf-1", shared_from="cb.us"),
            ]
        )
        assert store.links.shared_with("cb.us", "001000000000001AAA") == ["cb.eu", "cb.uk"]
        got = store.links.get("cb.eu", "001000000000001AAA")
        assert got is not None and got.shared_from == "cb.us"
