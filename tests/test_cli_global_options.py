"""--config/-c, --log-level and --log-format work before the command as well as after it, and
--version prints the version. After the command an option wins over the same option before it;
before the command, -c wins over BILLING_CONNECTOR_CONFIG."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fault_readback import cli

from connector import __version__
from connector.sandbox.run import SandboxPair


def without_config_env(cli_env: dict[str, str]) -> tuple[dict[str, str], Path]:
    env = dict(cli_env)
    return env, Path(env.pop("BILLING_CONNECTOR_CONFIG"))


def log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]


def test_config_before_the_command_is_used(sandboxes: SandboxPair, cli_env: dict[str, str]) -> None:
    env, cfg = without_config_env(cli_env)

    result = cli("-c", str(cfg), "sync", "--json", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] == 3


def test_config_before_the_command_wins_over_the_environment(
    sandboxes: SandboxPair, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "BILLING_CONNECTOR_CONFIG": str(tmp_path / "missing.yaml")}

    result = cli("--config", cli_env["BILLING_CONNECTOR_CONFIG"], "status", "--json", env=env)

    assert result.returncode == 0, result.stderr


def test_config_after_the_command_wins_over_config_before_it(
    sandboxes: SandboxPair, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env, cfg = without_config_env(cli_env)
    missing = tmp_path / "missing.yaml"

    after_wins = cli("-c", str(missing), "status", "-c", str(cfg), env=env)
    before_only = cli("-c", str(missing), "status", env=env)

    assert after_wins.returncode == 0, after_wins.stderr
    assert before_only.returncode == 2 and str(missing) in before_only.stderr


def test_log_level_before_or_after_the_command_overrides_the_config(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    default = cli("sync", env=cli_env)
    before = cli("--log-level", "error", "sync", env=cli_env)
    after = cli("sync", "--log-level", "error", env=cli_env)
    after_wins = cli("--log-level", "error", "sync", "--log-level", "info", env=cli_env)

    assert {r.returncode for r in (default, before, after, after_wins)} == {0}
    assert any(e.get("event") == "run.finished" for e in log_lines(default.stderr))
    assert log_lines(before.stderr) == [] and log_lines(after.stderr) == []
    assert any(e.get("event") == "run.finished" for e in log_lines(after_wins.stderr))


def test_log_format_before_or_after_the_command_overrides_the_config(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    before = cli("--log-format", "console", "sync", env=cli_env)
    after = cli("sync", "--log-format", "console", env=cli_env)

    for result in (before, after):
        assert result.returncode == 0, result.stderr
        assert "run.finished" in result.stderr and log_lines(result.stderr) == []


def test_an_unknown_log_level_is_refused_with_exit_2() -> None:
    result = cli("--log-level", "verbose", "sync", env=dict(os.environ))

    assert result.returncode == 2 and "--log-level" in result.stderr


def test_version_prints_the_package_version() -> None:
    result = cli("--version", env=dict(os.environ))

    assert result.returncode == 0
    assert result.stdout.strip() == f"billing-connector {__version__}"
