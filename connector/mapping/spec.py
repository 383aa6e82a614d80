"""The mapping file as written: its models, and the parser that reads them from YAML.

A mapping file names one billing object (`target: customer`), optionally the billing system it
builds for (`system:`; by default connector.billing.DEFAULT_SYSTEM), and, under `fields`, one entry per
target path (`address.line1`, `metadata.region`). Each entry takes `from` (one source path or a
list tried in order), or a static `value`, plus optional `default` and `transforms`. This module
only checks the shape of the file; what the targets and sources mean is checked in `compile`.
It never raises on the first problem: every problem is collected with its file:line:column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from connector.errors import ConfigError, MappingError
from connector.mapping.transforms import Transform, TransformArgError, parse_transform
from connector.yaml_source import KeyPath, Position, PositionedYaml, _walk, compose

Severity = Literal["error", "warning"]

TOP_LEVEL_KEYS = ("system", "target", "fields")
FIELD_KEYS = ("from", "value", "default", "transforms")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a mapping file, where an admin can find it."""

    file: Path
    line: int
    column: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class MappingErrors(MappingError):
    """A mapping cannot be used; carries every problem found, errors and warnings alike."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"] or self.problems
        first = errors[0] if errors else None
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        super().__init__(
            (first.message if first else "the mapping cannot be used") + more,
            file=first.file if first else None,
            line=first.line if first else None,
            column=first.column if first else None,
        )

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True, slots=True)
class Located:
    """A value from the file and where it was written."""

    value: Any
    where: KeyPath


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One entry under `fields`, shape-checked but not yet checked against the target or Salesforce."""

    target: str
    where: KeyPath  # of the target key
    sources: tuple[Located, ...]  # of str
    value: Located | None  # static value (str or list of str; type checked in compile)
    default: Located | None
    transforms: tuple[tuple[Transform, KeyPath], ...]


@dataclass(frozen=True, slots=True)
class MappingSpec:
    file: Path
    doc: PositionedYaml
    target: str
    fields: tuple[FieldSpec, ...]
    # None: the file names no system (every file written before `system:` existed); the compiler
    # reads it as connector.billing.DEFAULT_SYSTEM.
    system: str | None = None


class Collector:
    """Collects problems with positions taken from the parsed YAML."""

    def __init__(self, doc: PositionedYaml) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def at(self, where: KeyPath, message: str, severity: Severity = "error") -> None:
        pos = self.doc.where(where)
        self.problems.append(Problem(self.doc.file, pos.line, pos.column, message, severity))

    def value_at(self, where: KeyPath, message: str, severity: Severity = "error") -> None:
        """At the value of a mapping key rather than at the key itself."""
        value_where = (*where, "__value__")
        self.at(value_where if value_where in self.doc.positions else where, message, severity)


def value_path(doc: PositionedYaml, where: KeyPath) -> KeyPath:
    """The position key of a value: mapping values are stored under `__value__`, list items as is."""
    value_where = (*where, "__value__")
    return value_where if value_where in doc.positions else where


def problem_from_config_error(exc: ConfigError, file: Path) -> Problem:
    return Problem(exc.file or file, exc.line or 1, exc.column or 1, exc.message)


def _drop_duplicate_keys(
    node: yaml.Node, file: Path, problems: list[Problem], depth: int = 0
) -> None:
    """Report every repeated key (two mappings to one target) and keep the first, so that the
    rest of the file is still checked in the same pass."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        kept = []
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if isinstance(key, str) and key in seen:
                first = seen[key].start_mark.line + 1
                # Depth 1 is the mapping under `fields`: its keys are targets.
                what = "is mapped twice" if depth == 1 else "appears twice"
                problems.append(
                    Problem(
                        file,
                        key_node.start_mark.line + 1,
                        key_node.start_mark.column + 1,
                        f"{key!r} {what} (first at line {first}); keep one",
                    )
                )
                continue
            if isinstance(key, str):
                seen[key] = key_node
            kept.append((key_node, value_node))
            _drop_duplicate_keys(value_node, file, problems, depth + 1)
        node.value = kept
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _drop_duplicate_keys(child, file, problems, depth + 1)


def parse_yaml(file: Path, text: str) -> tuple[PositionedYaml | None, list[Problem]]:
    """YAML with positions, reporting duplicate keys instead of stopping at the first one."""
    try:
        # Bounded: an alias bomb or a non-plain tag is a problem at its line, not minutes of work.
        node = compose(text, file)
    except ConfigError as exc:
        return None, [problem_from_config_error(exc, file)]
    problems: list[Problem] = []
    positions: dict[KeyPath, Position] = {}
    if node is None:
        return PositionedYaml(file, {}, positions), problems
    _drop_duplicate_keys(node, file, problems)
    try:
        # yaml_source's walker, so positions mean the same here as in config errors.
        data = _walk(node, (), positions, file)
    except ConfigError as exc:
        return None, [*problems, problem_from_config_error(exc, file)]
    return PositionedYaml(file, data, positions), problems


def read_spec(file: Path, text: str) -> tuple[MappingSpec | None, list[Problem]]:
    """Parse one mapping file's text. Returns the spec (None when unusable) and the problems."""
    doc, problems = parse_yaml(file, text)
    if doc is None:
        return None, problems
    out = Collector(doc)
    out.problems.extend(problems)
    data = doc.data
    if not isinstance(data, dict):
        out.at((), "a mapping file is a YAML mapping with 'target' and 'fields'")
        return None, out.problems
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            out.at((key,), f"unknown key {key!r}; a mapping file has {', '.join(TOP_LEVEL_KEYS)}")
    system = data.get("system")
    if "system" in data and (not isinstance(system, str) or not system):
        out.value_at(
            ("system",), "system must be the name of the billing system this file builds for"
        )
        system = None
    target = data.get("target")
    if "target" not in data:
        out.at((), "missing 'target' (e.g. target: customer)")
    elif not isinstance(target, str):
        out.value_at(("target",), "target must be a name like customer")
        target = None
    fields_data = data.get("fields")
    fields: list[FieldSpec] = []
    if "fields" not in data:
        out.at((), "missing 'fields': the mapping of target paths to sources")
    elif not isinstance(fields_data, dict) or not fields_data:
        out.value_at(
            ("fields",),
            "fields must be a mapping of target paths (name, address.line1, ...) to entries",
        )
    else:
        for name, entry in fields_data.items():
            parsed = _read_field(out, name, entry)
            if parsed is not None:
                fields.append(parsed)
    spec = (
        MappingSpec(file, doc, target, tuple(fields), system) if isinstance(target, str) else None
    )
    return spec, out.problems


def _read_field(out: Collector, name: str, entry: Any) -> FieldSpec | None:
    where: KeyPath = ("fields", name)
    if not isinstance(entry, dict):
        out.value_at(
            where,
            f'{name}: an entry is a mapping like {{from: Account.Name}} or {{value: "text"}}',
        )
        return None
    ok = True
    for key in entry:
        if key not in FIELD_KEYS:
            out.at(
                (*where, key), f"unknown key {key!r} in {name}; expected {', '.join(FIELD_KEYS)}"
            )
            ok = False
    sources: list[Located] = []
    if "from" in entry:
        raw = entry["from"]
        if isinstance(raw, str):
            sources.append(Located(raw, value_path(out.doc, (*where, "from"))))
        elif isinstance(raw, list) and raw:
            for i, item in enumerate(raw):
                if isinstance(item, str):
                    sources.append(Located(item, (*where, "from", i)))
                else:
                    out.at((*where, "from", i), "a source is a path like Account.Name")
                    ok = False
        else:
            out.value_at((*where, "from"), "from takes a source path or a list of them")
            ok = False
    value = (
        Located(entry["value"], value_path(out.doc, (*where, "value")))
        if "value" in entry
        else None
    )
    default = (
        Located(entry["default"], value_path(out.doc, (*where, "default")))
        if "default" in entry
        else None
    )
    transforms: list[tuple[Transform, KeyPath]] = []
    if "transforms" in entry:
        raw_list = entry["transforms"]
        if not isinstance(raw_list, list):
            out.value_at(
                (*where, "transforms"), "transforms is a list, e.g. [trim, {truncate: 256}]"
            )
            ok = False
        else:
            for i, item in enumerate(raw_list):
                item_where: KeyPath = (*where, "transforms", i)
                try:
                    transforms.append((parse_transform(item), item_where))
                except TransformArgError as exc:
                    bad: KeyPath = (*item_where, *exc.where)
                    out.at(bad if exc.at_key else value_path(out.doc, bad), exc.message)
                    ok = False
    if value is not None and (sources or "from" in entry):
        out.at((*where, "value"), f"{name}: use either from or value, not both")
        ok = False
    elif value is not None and (default is not None or transforms):
        key = "default" if default is not None else "transforms"
        out.at((*where, key), f"{name}: a static value takes no {key}")
        ok = False
    elif (
        ok and value is None and "from" not in entry and not any(t.sources() for t, _ in transforms)
    ):
        out.at(where, f"{name}: needs from (a source path) or value (a static value)")
        ok = False
    if not ok:
        return None
    return FieldSpec(name, where, tuple(sources), value, default, tuple(transforms))
