"""YAML loading that remembers where every value came from.

Admins edit config and mapping files by hand, so every error must name `file:line:column`.
`load_positioned` returns the plain data plus a map from a key path (a tuple of keys and list
indexes) to the 1-based line and column of that value. It never evaluates tags or anchors into
objects: only the safe YAML subset is accepted.

What it must never do: let a file decide how much work reading it costs. A 500-byte document of
nested aliases ("billion laughs") expands to a billion values; every alias is therefore counted
at the size it expands to while the file is composed, and a file that would grow past
`MAX_NODES` values, nest deeper than `MAX_DEPTH`, or use a tag outside plain YAML (such as
`!!python/name`) is refused with the line and column of the alias, level or tag at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from connector.errors import ConfigError

KeyPath = tuple[str | int, ...]

# Config and mapping files hold hundreds of values; these limits are far above any real one.
MAX_NODES = 50_000
MAX_DEPTH = 64
# Plain YAML: what the safe loader builds from untagged text. `merge` is `<<`, which the
# config and mapping checks then report as an unknown key, with its position.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("null", "bool", "int", "float", "str", "timestamp", "seq", "map", "merge")
)


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


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader's composer, counting what every alias expands to as it goes.

    Aliases share one node object with their anchor, so composing stays cheap; it is the walk
    over the composed tree (and any consumer of the data) that pays for every expansion. Each
    node's expanded size is known once it is composed, so an alias adds exactly that.
    """

    def __init__(self, stream: str, file: Path) -> None:
        super().__init__(stream)
        self._file = file
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to, once composed
        self._heights: dict[int, int] = {}  # id(node) -> levels it expands to
        self._total = 0
        self._depth = 0

    def _refuse(self, message: str, mark: yaml.Mark | None) -> ConfigError:
        return ConfigError(
            message,
            file=self._file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        )

    def _count(self, size: int, mark: yaml.Mark | None) -> None:
        self._total += size
        if self._total > MAX_NODES:
            raise self._refuse(
                f"this file expands to more than {MAX_NODES} values (aliases repeat what their "
                "anchor holds); write the values out or use fewer nested aliases",
                mark,
            )

    def _next_event(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self._next_event()
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                size = self._sizes.get(id(anchored))
                if size is None:  # the anchor's own value is still being read
                    raise self._refuse(
                        f"alias *{event.anchor} refers to the value that contains it",
                        event.start_mark,
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        start = self._next_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._refuse(f"values are nested more than {MAX_DEPTH} levels deep", start)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        if node.tag not in _PLAIN_TAGS:
            raise self._refuse(
                f"tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed: "
                "only plain YAML values (text, numbers, true/false, lists, mappings)",
                node.start_mark,
            )
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in children)
        # An alias nests its anchor's whole depth where it is used: count levels as expanded,
        # so that walking the data can never recurse deeper than MAX_DEPTH either.
        height = 1 + max((self._heights.get(id(c), 1) for c in children), default=0)
        if height > MAX_DEPTH:
            raise self._refuse(
                f"values are nested more than {MAX_DEPTH} levels deep (aliases included)",
                node.start_mark,
            )
        self._heights[id(node)] = height
        self._count(1, node.start_mark)
        return node


def compose(text: str, file: Path) -> yaml.Node | None:
    """The YAML node tree of one document, within the limits; errors name file:line:column."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, file)
        node: yaml.Node | None = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            f"not valid YAML: {exc.problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.reader.ReaderError as exc:
        # Control characters and the like: the reader knows the offset, not the line.
        line, column = _line_column(text, exc.position)
        raise ConfigError(
            f"not valid YAML: character U+{exc.character:04X} is not allowed in YAML text",
            file=file,
            line=line,
            column=column,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()
    return node


def _line_column(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def read_text(file: Path) -> str:
    """A config or mapping file's text; a file that is not UTF-8 names the first bad byte."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=file) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise ConfigError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded; save the file as UTF-8",
            file=file,
            line=line,
            column=column,
        ) from None


def parse_positioned(text: str, file: Path) -> PositionedYaml:
    node = compose(text, file)
    positions: dict[KeyPath, Position] = {}
    data = {} if node is None else _walk(node, (), positions, file)
    return PositionedYaml(file=file, data=data, positions=positions)


def load_positioned(file: Path) -> PositionedYaml:
    return parse_positioned(read_text(file), file)
