"""Each kind of mapping mistake is reported at its exact file:line:column, all in one run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connector.errors import ConfigError, MappingError
from connector.mapping import MappingErrors, Problem, check_mappings, load_mapping, load_mappings

BROKEN = Path(__file__).parent / "mappings_broken"
MAPPINGS = Path(__file__).parent.parent / "mappings"
BROKEN_FILES = sorted(BROKEN.glob("*.yaml"))


def expected(file: Path) -> list[str]:
    """The `# expect: line:column: message` comments at the end of a broken file."""
    marker = "# expect: "
    return [
        f"{file}:{line[len(marker) :]}"
        for line in file.read_text(encoding="utf-8").splitlines()
        if line.startswith(marker)
    ]


def test_there_is_a_broken_file_for_each_kind_of_mistake() -> None:
    assert len(BROKEN_FILES) >= 20
    for file in BROKEN_FILES:
        assert expected(file), f"{file.name} says nothing it expects"


@pytest.mark.parametrize("file", BROKEN_FILES, ids=lambda p: p.stem)
def test_broken_mapping_reports_exact_positions(file: Path) -> None:
    with pytest.raises(MappingErrors) as caught:
        load_mapping(file)
    assert [str(p) for p in caught.value.problems] == expected(file)
    assert all(p.severity == "error" for p in caught.value.problems)


def test_mapping_errors_is_a_mapping_error_that_names_the_first_place() -> None:
    file = BROKEN / "many_mistakes.yaml"
    with pytest.raises(MappingError) as caught:
        load_mapping(file)
    err = caught.value
    assert isinstance(err, ConfigError) and err.exit_code == 2
    assert (err.file, err.line, err.column) == (file, 6, 35)
    assert "and 5 more error(s)" in err.message
    assert str(err).splitlines() == expected(file)


def test_every_problem_in_every_file_is_reported_in_one_go(tmp_path: Path) -> None:
    for file in BROKEN_FILES:
        shutil.copy(file, tmp_path / file.name)
    problems = [str(p) for p in check_mappings(tmp_path)]
    for file in BROKEN_FILES:
        for line in expected(file):
            assert line.replace(str(file), str(tmp_path / file.name)) in problems


def test_problem_prints_as_file_line_column_message() -> None:
    problem = Problem(Path("mappings/customer.yaml"), 3, 7, "unknown target 'x'")
    assert str(problem) == "mappings/customer.yaml:3:7: unknown target 'x'"
    assert problem.severity == "error"


def test_shipped_customer_mapping_passes_check() -> None:
    assert check_mappings(MAPPINGS) == []
    mapping = load_mappings(MAPPINGS)
    assert mapping.file == MAPPINGS / "customer.yaml"
    assert "shipping.name" in mapping.targets()


def test_directory_without_customer_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MappingErrors) as caught:
        load_mappings(tmp_path)
    assert [p.message for p in caught.value.problems] == [
        "no mapping file with 'target: customer' in this directory"
    ]


def test_two_customer_mappings_are_refused(tmp_path: Path) -> None:
    text = "target: customer\nfields:\n  name: {from: Account.Name}\n"
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yml").write_text(text)
    with pytest.raises(MappingErrors) as caught:
        load_mappings(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yml'}:1:9: a second customer mapping (the first is {tmp_path / 'a.yaml'}); keep one"
    ]


def test_missing_directory_is_a_problem(tmp_path: Path) -> None:
    problems = check_mappings(tmp_path / "nope")
    assert [p.message for p in problems] == ["mappings directory does not exist"]


def test_empty_and_shapeless_files_are_problems_not_crashes(tmp_path: Path) -> None:
    cases = {
        "empty.yaml": "",
        "list.yaml": "- a\n- b\n",
        "no_fields.yaml": "target: customer\n",
        "fields_list.yaml": "target: customer\nfields: [a]\n",
        "entry_string.yaml": "target: customer\nfields:\n  name: Account.Name\n",
        "transforms_string.yaml": "target: customer\nfields:\n  name: {from: Account.Name, transforms: trim}\n",
        "from_number.yaml": "target: customer\nfields:\n  name: {from: 42}\n",
        "extra_top.yaml": "target: customer\nversion: 2\nfields:\n  name: {from: Account.Name}\n",
        "binary.yaml": b"\xff\xfe".decode("latin-1"),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="latin-1" if name == "binary.yaml" else "utf-8")
        with pytest.raises(MappingErrors) as caught:
            load_mapping(tmp_path / name)
        assert caught.value.problems, name
        for problem in caught.value.problems:
            assert problem.line >= 1 and problem.column >= 1


def test_warnings_do_not_stop_loading(tmp_path: Path) -> None:
    file = tmp_path / "customer.yaml"
    file.write_text("target: customer\nfields:\n  phone: {from: Account.Phone}\n", encoding="utf-8")
    mapping = load_mapping(file)
    assert [(p.severity, p.line, p.column) for p in mapping.warnings] == [("warning", 3, 3)]
    assert [p.severity for p in check_mappings(tmp_path)] == ["warning"]


def test_soql_fields_never_select_a_field_twice(tmp_path: Path) -> None:
    file = tmp_path / "customer.yaml"
    file.write_text(
        "target: customer\nfields:\n"
        "  name: {from: Account.Name}\n"
        "  shipping.name: {from: Account.NAME}\n"
        "  shipping.address.city: {from: Account.ShippingCity}\n"
        "  metadata.account: {from: Order.AccountId}\n",
        encoding="utf-8",
    )
    # Salesforce refuses a query that selects the same field twice, in any case.
    assert load_mapping(file).soql_fields() == ["Account.Name", "Account.ShippingCity", "AccountId"]


def test_commented_examples_in_the_shipped_mapping_are_valid(tmp_path: Path) -> None:
    """Admins copy the commented examples; uncommented, they must still pass check."""
    lines = []
    for line in (MAPPINGS / "customer.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("  # metadata.") or line.startswith("  # tax_exempt:"):
            line = "  " + line[4:]
        elif line.startswith("  #   "):
            line = "    " + line[6:]
        lines.append(line)
    (tmp_path / "customer.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert check_mappings(tmp_path) == []
    targets = load_mappings(tmp_path).targets()
    assert {"metadata.region", "metadata.parent_customer", "tax_exempt"} <= set(targets)


@pytest.mark.parametrize("file", BROKEN_FILES, ids=lambda p: p.stem)
def test_the_check_command_prints_each_problem_and_exits_2(file: Path, tmp_path: Path) -> None:
    """`billing-connector mappings check` on a folder holding only this broken file."""
    from typer.testing import CliRunner

    from connector.cli import app

    shutil.copy(file, tmp_path / file.name)
    result = CliRunner().invoke(app, ["mappings", "check", "--dir", str(tmp_path)], catch_exceptions=False)

    assert result.exit_code == 2
    printed = result.output.splitlines()
    for line in expected(file):
        assert line.replace(str(file), str(tmp_path / file.name)) in printed
