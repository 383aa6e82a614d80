"""Config and mapping files are read within limits and as plain YAML: a 500-byte alias bomb
("billion laughs"), a `!!python/name` tag, a file that is not UTF-8 end at exit 2 with the
file, line and column at fault, before anything is contacted and without a traceback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MAPPINGS

from connector.errors import ConfigError
from connector.sandbox.run import SandboxPair
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.stripe import StripeSandbox
from connector.yaml_source import MAX_DEPTH, MAX_NODES, load_positioned

# Nine levels of nine aliases each: 9**9 (387 million) strings once expanded.
BOMB = "\n".join(
    [
        'lol-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"lol-{c}: &{c} [{','.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
) + "\n"


@pytest.fixture(scope="module")
def idle_sandboxes() -> Iterator[SandboxPair]:
    """Servers that must never hear from a command that stops at exit 2."""
    pair = SandboxPair(salesforce=SalesforceSandbox().start(), stripe=StripeSandbox().start())
    try:
        yield pair
    finally:
        pair.stop()


def requests_seen(sandboxes: SandboxPair) -> int:
    return int(sandboxes.salesforce.stats()["total"]) + int(sandboxes.stripe.stats()["total"])


def setup(sandboxes: SandboxPair, tmp_path: Path) -> tuple[dict[str, str], Path, Path, Path]:
    """A working config and a copy of the shipped mappings; returns env, config, mapping, state."""
    mappings = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, mappings)
    state = tmp_path / "state.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(sandboxes.config_snippet(state_url=f"sqlite:///{state}", mappings_dir=str(mappings)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env.update(sandboxes.secrets(), BILLING_CONNECTOR_CONFIG=str(cfg))
    return env, cfg, mappings / "customer.yaml", state


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def place(stderr: str, file: Path) -> tuple[int, int]:
    found = re.search(re.escape(str(file)) + r":(\d+):(\d+): ", stderr)
    assert found, stderr
    return int(found.group(1)), int(found.group(2))


def appended(file: Path, text: str) -> int:
    """Append `text` to `file`; returns the line number where it starts."""
    before = file.read_text()
    if not before.endswith("\n"):
        before += "\n"
    file.write_text(before + text)
    return before.count("\n") + 1


@pytest.mark.parametrize("which", ["config", "mapping"])
def test_an_alias_bomb_fails_fast_at_the_alias_that_goes_over_the_limit(
    idle_sandboxes: SandboxPair, tmp_path: Path, which: str
) -> None:
    env, cfg, mapping, state = setup(idle_sandboxes, tmp_path)
    target = cfg if which == "config" else mapping
    first = appended(target, BOMB)
    seen = requests_seen(idle_sandboxes)
    assert len(BOMB.encode()) < 600

    result = cli("sync", env=env)

    assert result.returncode == 2, result.stderr
    line, column = place(result.stderr, target)
    assert first <= line < first + BOMB.count("\n") and column > 1
    assert "expands to more than" in result.stderr
    assert "Traceback" not in result.stderr
    assert requests_seen(idle_sandboxes) == seen and not state.exists()


@pytest.mark.parametrize("which", ["config", "mapping"])
@pytest.mark.parametrize(
    ("text", "column"),
    [("x-hook: !!python/name:os.system\n", 9), ("x-obj: !!python/object/apply:os.getcwd []\n", 8),
     ("x-local: !secret db\n", 10)],
    ids=["python-name", "python-object", "local-tag"],
)
def test_a_tag_outside_plain_yaml_is_refused_at_its_place(
    idle_sandboxes: SandboxPair, tmp_path: Path, which: str, text: str, column: int
) -> None:
    env, cfg, mapping, state = setup(idle_sandboxes, tmp_path)
    target = cfg if which == "config" else mapping
    line = appended(target, text)
    seen = requests_seen(idle_sandboxes)

    result = cli("sync", env=env)

    assert result.returncode == 2, result.stderr
    assert place(result.stderr, target) == (line, column)
    assert "is not allowed" in result.stderr and "Traceback" not in result.stderr
    assert requests_seen(idle_sandboxes) == seen and not state.exists()


@pytest.mark.parametrize("which", ["config", "mapping"])
def test_a_file_that_is_not_utf8_names_the_line_and_column_of_the_first_bad_byte(
    idle_sandboxes: SandboxPair, tmp_path: Path, which: str
) -> None:
    env, cfg, mapping, state = setup(idle_sandboxes, tmp_path)
    target = cfg if which == "config" else mapping
    line = appended(target, "# fine\n")
    # "Müller" saved as Latin-1 by an old editor: the ü is the single byte 0xfc.
    target.write_bytes(target.read_bytes() + b"# Kunde: M" + b"\xfcller\n")

    result = cli("sync", env=env)
    check = cli("mappings", "check", "--dir", str(mapping.parent), env=env)

    assert result.returncode == 2, result.stderr
    assert place(result.stderr, target) == (line + 1, len("# Kunde: M") + 1)
    assert "UTF-8" in result.stderr and "Traceback" not in result.stderr
    assert not state.exists()
    if which == "mapping":
        assert check.returncode == 2 and place(check.stderr, target) == (line + 1, 11)


def test_mappings_check_reports_an_alias_bomb_as_a_problem(
    idle_sandboxes: SandboxPair, tmp_path: Path
) -> None:
    env, _, mapping, _ = setup(idle_sandboxes, tmp_path)
    first = appended(mapping, BOMB)

    result = cli("mappings", "check", "--dir", str(mapping.parent), env=env)

    assert result.returncode == 2, result.stderr
    line, _ = place(result.stderr, mapping)
    assert first <= line < first + BOMB.count("\n")


# --- the reader's limits, in memory ---------------------------------------------------------


def test_aliases_within_the_limits_are_read_as_their_values(tmp_path: Path) -> None:
    file = tmp_path / "f.yaml"
    file.write_text("emails: &e [Order.BillToContact.Email, Account.Email__c]\nagain: *e\n")

    doc = load_positioned(file)

    assert doc.data == {"emails": ["Order.BillToContact.Email", "Account.Email__c"],
                        "again": ["Order.BillToContact.Email", "Account.Email__c"]}


def test_an_alias_to_the_value_that_contains_it_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "f.yaml"
    file.write_text("ok: 1\nloop: &l [1, *l]\n")

    with pytest.raises(ConfigError) as caught:
        load_positioned(file)

    assert (caught.value.line, caught.value.column) == (2, 14)  # the `*l`


def test_nesting_deeper_than_the_limit_is_refused_also_through_aliases(tmp_path: Path) -> None:
    half = MAX_DEPTH // 2 + 1
    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    # Each line alone is within the limit; the alias nests one inside the other.
    chained = tmp_path / "chained.yaml"
    chained.write_text(f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n")

    for file in (deep, chained):
        with pytest.raises(ConfigError) as caught:
            load_positioned(file)
        assert "nested more than" in caught.value.message and caught.value.line


def test_the_expansion_limit_counts_what_aliases_expand_to(tmp_path: Path) -> None:
    # A list of MAX_NODES // 10 items repeated 11 times: small on disk, over the limit expanded.
    file = tmp_path / "f.yaml"
    items = MAX_NODES // 10
    file.write_text(f"a: &a [{', '.join(['1'] * items)}]\nb: [{', '.join(['*a'] * 11)}]\n")

    with pytest.raises(ConfigError) as caught:
        load_positioned(file)

    assert caught.value.line == 2 and "expands to more than" in caught.value.message
