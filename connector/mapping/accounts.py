"""Mappings per billing account: a folder of its own, falling back to the shared one.

`mappings/customer.yaml` serves every billing account; `mappings/<account name>/` (holding its
own `target: customer` file) replaces it for that account alone, e.g. a UK entity that maps
`preferred_locales` differently. A folder named for no billing account is reported, since it
would silently never be used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from connector.mapping.compile import CustomerMapping, Describe, check_mappings, load_mappings
from connector.mapping.spec import Problem


def _has_mapping_files(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
        for p in folder.iterdir()
    )


def mapping_folders(directory: Path, accounts: Sequence[str]) -> dict[str, Path]:
    """Billing account -> the folder its customer mapping is read from."""
    return {
        name: directory / name if _has_mapping_files(directory / name) else directory
        for name in accounts
    }


def load_account_mappings(directory: Path, accounts: Sequence[str]) -> dict[str, CustomerMapping]:
    """Billing account -> its customer mapping. Each folder is compiled once. Raises
    MappingErrors (every problem, with file:line:column) when any folder in use has an error."""
    by_folder: dict[Path, CustomerMapping] = {}
    out: dict[str, CustomerMapping] = {}
    for name, folder in mapping_folders(directory, accounts).items():
        if folder not in by_folder:
            by_folder[folder] = load_mappings(folder)
        out[name] = by_folder[folder]
    return out


def check_account_mappings(
    directory: Path, accounts: Sequence[str], *, describe: Describe | None = None
) -> list[Problem]:
    """Every problem of the shared folder and of each account's own folder."""
    problems = list(check_mappings(directory, describe=describe))
    known = set(accounts)
    for folder in sorted(set(mapping_folders(directory, accounts).values()) - {directory}):
        problems.extend(check_mappings(folder, describe=describe))
    if directory.is_dir():
        for folder in sorted(p for p in directory.iterdir() if _has_mapping_files(p)):
            if folder.name not in known:
                problems.append(
                    Problem(
                        folder,
                        1,
                        1,
                        f"folder {folder.name!r} is named for no billing account "
                        f"({', '.join(accounts)}); its mappings would never be used",
                        "warning",
                    )
                )
    return problems


def shared_plan(mapping: CustomerMapping, shared: frozenset[str]) -> dict[str, object]:
    """The part of `mapping` that writes fields a sharing group shares (by top-level key)."""
    return {f.target: f.normalised() for f in mapping.fields if f.target.split(".")[0] in shared}


def check_shared_fields(
    mappings: Mapping[str, CustomerMapping],
    groups: Sequence[tuple[str, Sequence[str], frozenset[str]]],
) -> list[Problem]:
    """A group's shared fields are written once, from one mapping: every member's mapping must
    say the same about each of them. `groups` holds (label, member accounts, shared fields)."""
    problems: list[Problem] = []
    for label, members, shared in groups:
        present = [m for m in members if m in mappings]
        if len(present) < 2:
            continue
        first = present[0]
        base = shared_plan(mappings[first], shared)
        for other in present[1:]:
            theirs = shared_plan(mappings[other], shared)
            if mappings[other].file == mappings[first].file:
                continue
            differ = sorted(k for k in base.keys() | theirs.keys() if base.get(k) != theirs.get(k))
            if differ:
                line = _line_of(mappings[other].file, differ) or _line_of(
                    mappings[other].file, ["fields"]
                )
                problems.append(
                    Problem(
                        mappings[other].file,
                        line or 1,
                        1,
                        f"sharing group {label}: billing accounts {first!r} "
                        f"({mappings[first].file}) and {other!r} map the shared field(s) "
                        f"{', '.join(differ)} differently; the group has one customer, so a "
                        "shared field is written once: map it the same way in both files, or "
                        "leave it to the shared mapping",
                    )
                )
    return problems


def _line_of(file: Path, targets: Sequence[str]) -> int | None:
    """The line of the first of `targets` written as a key in `file` (for the admin's editor)."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for target in targets:
        for number, text in enumerate(lines, start=1):
            if text.strip().startswith(f"{target}:"):
                return number
    return None
