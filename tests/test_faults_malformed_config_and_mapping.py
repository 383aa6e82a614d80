"""A malformed config file or mapping: the command exits 2, names the file, line and column,
and touches nothing: neither sandbox receives a request and the state database is not created.
(tests/test_cli_exit_codes.py covers a misspelled target field and an out-of-range setting.)"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MAPPINGS
from fault_readback import cli, requests_seen

from connector.sandbox.run import SandboxPair
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.stripe import StripeSandbox

BROKEN = Path(__file__).parent / "mappings_broken"


@pytest.fixture(scope="module")
def idle_sandboxes() -> Iterator[SandboxPair]:
    """Servers that must never hear from a command that stops at exit 2 (one pair for the module)."""
    pair = SandboxPair(salesforce=SalesforceSandbox().start(), stripe=StripeSandbox().start())
    try:
        yield pair
    finally:
        pair.stop()


def setup(
    sandboxes: SandboxPair, tmp_path: Path, mappings: Path = MAPPINGS
) -> tuple[dict[str, str], Path, Path]:
    state = tmp_path / "state.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        sandboxes.config_snippet(state_url=f"sqlite:///{state}", mappings_dir=str(mappings))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env.update(sandboxes.secrets(), BILLING_CONNECTOR_CONFIG=str(cfg))
    return env, cfg, state


def expected_place(file: Path) -> str:
    """file:line:column from the `# expect: line:column: message` comment of a broken mapping."""
    line = next(ln for ln in file.read_text().splitlines() if ln.startswith("# expect: "))
    return ":".join(line.removeprefix("# expect: ").split(":")[:2])


@pytest.mark.parametrize(
    ("broken", "command"),
    [
        ("not_yaml", "sync"),
        ("metadata_reserved_key", "sync"),
        ("source_too_deep", "sync"),
        ("transform_unknown", "backfill"),
    ],
)
def test_a_malformed_mapping_exits_2_naming_the_place_and_touches_nothing(
    idle_sandboxes: SandboxPair, tmp_path: Path, broken: str, command: str
) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(BROKEN / f"{broken}.yaml", mappings / "customer.yaml")
    env, _, state = setup(idle_sandboxes, tmp_path, mappings)
    seen = requests_seen(idle_sandboxes)

    result = cli(command, env=env)

    assert result.returncode == 2, result.stderr
    assert (
        f"{mappings / 'customer.yaml'}:{expected_place(BROKEN / f'{broken}.yaml')}:"
        in result.stderr
    )
    assert requests_seen(idle_sandboxes) == seen
    assert not state.exists()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("mistake", "replace", "by", "says"),
    [
        ("not YAML", "billing:", "billing: [", "not valid YAML"),
        (
            "unknown key",
            "  - id: default",
            "  - id: default\n    max_requests_per_secnd: 5",
            "max_requests_per_secnd",
        ),
        ("auth without what it needs", "auth: access_token", "auth: password", "username"),
        (
            "plain http to a remote host",
            "instance_url: http://127.0.0.1",
            "instance_url: http://salesforce.example.com",
            "plain http",
        ),
    ],
)
def test_a_malformed_config_exits_2_and_touches_nothing(
    idle_sandboxes: SandboxPair, tmp_path: Path, mistake: str, replace: str, by: str, says: str
) -> None:
    env, cfg, state = setup(idle_sandboxes, tmp_path)
    text = cfg.read_text()
    assert replace in text, mistake
    cfg.write_text(text.replace(replace, by, 1))
    seen = requests_seen(idle_sandboxes)

    result = cli("sync", env=env)

    assert result.returncode == 2, result.stderr
    assert str(cfg) in result.stderr and says in result.stderr
    assert requests_seen(idle_sandboxes) == seen
    assert not state.exists()
    assert "Traceback" not in result.stderr
