"""YAML loading that remembers where every value came from.

Admins edit config and mapping files by hand, so every error must name `file:line:column`.
`load_positioned` returns the plain data plus a map from a key path (a tuple of keys and list
indexes) to the 1-based line and column of that value. It never evaluates tags or anchors into
objects: only the safe YAML subset is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from connector.errors import ConfigError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class PositionedYaml:
    file: Path
    data: Any
    positions: dict[KeyPath, Position]

    def where(self, path: KeyPath) -> Position:
        """The position of `path`, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), Position(1, 1))


def _walk(node: yaml.Node, path: KeyPath, out: dict[KeyPath, Position], file: Path) -> Any:
    out[path] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                yaml.safe_load(yaml.serialize(key_node))
                if not isinstance(key_node, yaml.ScalarNode)
                else key_node.value
            )
            if not isinstance(key, str):
                raise ConfigError(
                    "keys must be plain strings",
                    file=file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            if key in result:
                raise ConfigError(
                    f"duplicate key {key!r}",
                    file=file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            # The key's own position is where an admin looks for "unknown key" errors.
            result[key] = _walk(value_node, (*path, key), out, file)
            out[(*path, key)] = Position(
                key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
            out[(*path, key, "__value__")] = Position(
                value_node.start_mark.line + 1, value_node.start_mark.column + 1
            )
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, (*path, i), out, file) for i, child in enumerate(node.value)]
    # Scalars: let the safe constructor decide the type (int, bool, null, str, ...).
    return yaml.safe_load(yaml.serialize(node))


def parse_positioned(text: str, file: Path) -> PositionedYaml:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            f"not valid YAML: {exc.problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    positions: dict[KeyPath, Position] = {}
    data = {} if node is None else _walk(node, (), positions, file)
    return PositionedYaml(file=file, data=data, positions=positions)


def load_positioned(file: Path) -> PositionedYaml:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=file) from None
    return parse_positioned(text, file)
