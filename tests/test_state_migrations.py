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
        assert store.current_revision() == StateStore.head_revision() == "0003"
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
    monkeypatch.setattr(StateStore, "head_revision", staticmethod(lambda: "0004"))
    with pytest.raises(
        ConfigError,
        match=f"at schema revision 0003 but this version needs 0004; run `{UPGRADE_COMMAND}`",
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
