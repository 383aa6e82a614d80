"""Mappings per billing account: a folder of its own, falling back to the shared one.

`mappings/customer.yaml` serves every billing account; `mappings/<account name>/` (holding its
own `target: customer` file) replaces it for that account alone, e.g. a UK entity that maps
`preferred_locales` differently. A folder named for no billing account is reported, since it
would silently never be used.
"""

from __future__ import annotations

from collections.abc import Sequence
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
