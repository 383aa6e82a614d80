"""Under --json, a run that cannot start (exit 2: configuration; exit 3: unavailable) prints
exactly one JSON object on stdout with the error and the exit code; the human-readable error
still goes to stderr."""

from __future__ import annotations

import json
from pathlib import Path

from fault_readback import cli, requests_seen

from connector.sandbox.run import SandboxPair


def one_object(stdout: str) -> dict[str, object]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def test_an_invalid_config_prints_one_json_object_with_exit_code_2_and_where(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    cfg = Path(cli_env["BILLING_CONNECTOR_CONFIG"])
    text = cfg.read_text().replace("auth: access_token", "auth: access_token\n  page_size: 5")
    cfg.write_text(text)
    line = text.splitlines().index("  page_size: 5") + 1

    for command in (["sync", "--json"], ["backfill", "--json"], ["status", "--json"]):
        result = cli(*command, env=cli_env)

        assert result.returncode == 2
        report = one_object(result.stdout)
        assert report["exit_code"] == 2 and report["status"] == "failed"
        assert report["file"] == str(cfg) and report["line"] == line
        assert "page_size" in str(report["error"]) and "page_size" in result.stderr
    assert requests_seen(sandboxes) == 0


def test_a_refused_login_prints_one_json_object_with_exit_code_3(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "SALESFORCE_ACCESS_TOKEN": "00D000000000001!AQwrongwrongwrongwrongwrong"}

    result = cli("sync", "--json", env=env)

    assert result.returncode == 3
    report = one_object(result.stdout)
    assert report["exit_code"] == 3 and "SALESFORCE_ACCESS_TOKEN" in str(report["error"])
    assert "AQwrongwrongwrong" not in result.stdout + result.stderr


def test_a_missing_config_file_prints_one_json_object(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "BILLING_CONNECTOR_CONFIG": str(tmp_path / "nope.yaml")}

    result = cli("sync", "--json", env=env)

    assert result.returncode == 2
    assert one_object(result.stdout)["file"] == str(tmp_path / "nope.yaml")
