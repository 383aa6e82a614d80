"""`billing-connector init [DIR]` writes the commented example config as config.yaml and the
default mappings to start from, and never overwrites a file (exit 2 naming it, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def init(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BILLING_CONNECTOR_CONFIG"}
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def shipped_mappings() -> set[str]:
    return {
        p.relative_to(REPO / "mappings").as_posix()
        for p in (REPO / "mappings").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_init_writes_the_example_config_and_every_default_mapping(tmp_path: Path) -> None:
    target = tmp_path / "new" / "site"

    result = init("init", str(target), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    config = (target / "config.yaml").read_text()
    assert config.startswith("# Written by `billing-connector init`")
    assert config.endswith((REPO / "config.example.yaml").read_text())
    written = {p.relative_to(target / "mappings").as_posix() for p in (target / "mappings").rglob("*") if p.is_file()}
    assert written == shipped_mappings()


def test_init_defaults_to_the_current_directory_and_its_result_passes_mappings_check(
    tmp_path: Path,
) -> None:
    written = init("init", cwd=tmp_path)
    check = init("mappings", "check", cwd=tmp_path)  # reads ./config.yaml, then its mappings_dir

    assert written.returncode == 0, written.stderr
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "mappings" / "customer.yaml").exists()
    assert check.returncode == 0, check.stdout + check.stderr


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    mine = tmp_path / "mappings" / "customer.yaml"
    mine.write_text("target: customer\nfields: {}\n")

    result = init("init", str(tmp_path), cwd=tmp_path)

    assert result.returncode == 2
    assert str(mine) in result.stderr and "overwrite" in result.stderr
    assert mine.read_text() == "target: customer\nfields: {}\n"
    assert not (tmp_path / "config.yaml").exists()  # checked before anything was written


def test_init_refuses_an_existing_config(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("salesforce: {}\n")

    result = init("init", str(tmp_path), cwd=tmp_path)

    assert result.returncode == 2 and str(tmp_path / "config.yaml") in result.stderr
    assert (tmp_path / "config.yaml").read_text() == "salesforce: {}\n"
    assert not (tmp_path / "mappings").exists()
