"""Installed as users install it (a wheel, not editable, outside a checkout), every command finds
what it needs inside the package: `demo` runs from an empty directory, `init` writes the shipped
config and mappings, `--version` answers.

The wheel is built offline from a copy of the project files (the build backend comes from the
test environment: `pip wheel --no-build-isolation`). It is installed into a fresh venv; the
dependencies come from the running interpreter's environment through a .pth file, so the test
needs no index and works in any venv that can run the suite. Nothing of the checkout is on the
path: no PYTHONPATH, and the commands run in empty directories.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a wheel is built from (the sdist carries the same: see package_build.py).
PROJECT_FILES = ("pyproject.toml", "README.md", "package_build.py", "config.example.yaml")
PROJECT_DIRS = ("connector", "mappings")


def run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in PROJECT_FILES:
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_shipped")
    for name in PROJECT_DIRS:
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(dist), str(src)],
        cwd=src,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (whl,) = dist.glob("billing_connector-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin directory."""
    venv = tmp_path_factory.mktemp("venv")
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv
    ).stdout.strip()
    # The dependencies: this environment's site-packages, after the venv's own (a plain path in
    # a .pth is appended to sys.path and its own .pth files, e.g. an editable install of the
    # connector, are not run).
    deps = [p for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"]) if Path(p).is_dir()]
    (Path(purelib) / "test-dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    # pip installs for another interpreter with --python (no pip needed inside the venv).
    done = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)],
        cwd=venv,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BILLING_CONNECTOR_CONFIG")}


def test_the_wheel_carries_every_shipped_mapping_and_the_example_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"connector/_shipped/mappings/{p.relative_to(REPO / 'mappings').as_posix()}"
        for p in (REPO / "mappings").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert shipped and shipped <= names, shipped - names
    assert "connector/_shipped/config.example.yaml" in names
    assert "connector/sandbox/data/sample.yaml" in names


def test_demo_runs_from_an_empty_directory_when_installed_from_the_wheel(
    installed: Path, tmp_path: Path
) -> None:
    where = run(
        [str(installed / "python"), "-c", "import connector; print(connector.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
    )
    assert where.stdout.startswith(str(installed.parent)), where  # the wheel, not a checkout

    result = run([str(installed / "billing-connector"), "demo"], cwd=tmp_path, env=clean_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Stripe sandbox now holds" in result.stdout
    assert (tmp_path / "demo-state" / "state.db").exists()


def test_init_from_the_wheel_writes_the_shipped_config_and_mappings(
    installed: Path, tmp_path: Path
) -> None:
    result = run([str(installed / "billing-connector"), "init", "site"], cwd=tmp_path, env=clean_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "config.yaml").read_text().endswith(
        (REPO / "config.example.yaml").read_text()
    )
    assert (tmp_path / "site" / "mappings" / "customer.yaml").read_text() == (
        REPO / "mappings" / "customer.yaml"
    ).read_text()


def test_version_from_the_wheel_is_the_package_version(installed: Path, tmp_path: Path) -> None:
    from connector import __version__

    result = run([str(installed / "billing-connector"), "--version"], cwd=tmp_path, env=clean_env())

    assert result.returncode == 0 and result.stdout.strip() == f"billing-connector {__version__}"
