"""Mapping specs compiled into plans: checked against the target's schema and SOQL rules, then evaluated.

`compile_spec` turns a parsed `MappingSpec` into a frozen `CustomerMapping` (the plan) and every
problem found; `CustomerMapping.evaluate` maps one Salesforce Order record to a target payload.
Target paths, types, enums, lengths and value formats come only from the schema the mapping's
billing system registers (`connector.billing.mapping_schema(system, object)`), and tag limits
from its `TargetRules`: no vendor rule lives here. Evaluation must never produce a value the
target would refuse: anything that cannot be sent as is is cut to the limit (free text) or left
unset (phone, email, country, enum), never guessed. It never talks to Salesforce or a billing
system; the optional describe check uses a callback.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.billing import DEFAULT_SYSTEM, mapping_schema, rules_for, systems
from connector.billing.base import RESERVED_TAG_KEYS, TargetRules
from connector.billing.schema import TargetField, TargetSchema, Together
from connector.errors import ConfigError
from connector.mapping.spec import (
    Collector,
    FieldSpec,
    Located,
    MappingErrors,
    MappingSpec,
    Problem,
    Severity,
    problem_from_config_error,
    read_spec,
    value_path,
)
from connector.mapping.transforms import (
    EvalContext,
    Link,
    Lookup,
    Transform,
    country_code,
    strip_control,
    truncate,
)
from connector.secret_shapes import secret_shape
from connector.yaml_source import KeyPath, read_text

# Bump when evaluation rules change, so fingerprints (and so the engine's "mapping changed,
# re-sync everything" decision) change with them.
PLAN_VERSION = 1

# Salesforce allows at most five levels of child-to-parent relationships in one SOQL query.
SOQL_MAX_RELATIONSHIP_LEVELS = 5
ROOTS = ("Order", "Account")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_IDENTIFIER = re.compile(
    r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:__[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)*$"
)


@dataclass(frozen=True, slots=True)
class Target:
    """What a mapping builds for: one object of one billing system, with its rules."""

    schema: TargetSchema
    rules: TargetRules

    @property
    def label(self) -> str:
        return self.schema.label

    @property
    def tag_prefix(self) -> str:
        return f"{self.rules.tag_field}."

    def tag_field(self, path: str) -> TargetField:
        return TargetField(path, "string", self.rules.tag_value_max)


def resolve_target(system: str, obj: str) -> Target | None:
    """The registered schema and rules for `obj` of `system`, or None when none is registered."""
    schema = mapping_schema(system, obj)
    rules = rules_for(system)
    return Target(schema, rules) if schema is not None and rules is not None else None


# --- source paths ---------------------------------------------------------------------------


def soql_path(source: str) -> str:
    """`Order.BillToContact.Email` -> `BillToContact.Email`; `Account.Name` stays (relative to Order)."""
    return source[len("Order.") :] if source.startswith("Order.") else source


def check_source_path(source: str) -> str | None:
    """Why `source` is not a SOQL field path this connector can query from Order, or None."""
    segments = source.split(".")
    if segments[0] not in ROOTS:
        close = difflib.get_close_matches(segments[0].capitalize(), ROOTS, n=1, cutoff=0.7)
        why = f"; did you mean {close[0]!r}?" if close else ""
        return f"source {source!r} must start with Order. or Account.{why}"
    if len(segments) < 2:
        return f"source {source!r} names no field; e.g. {segments[0]}.Name"
    for segment in segments[1:]:
        if not _IDENTIFIER.match(segment):
            return (
                f"source {source!r}: {segment!r} is not a Salesforce field name "
                "(letters, digits and single underscores, starting with a letter)"
            )
    for segment in segments[1:-1]:
        if segment.lower().endswith("__c"):
            return f"source {source!r}: {segment!r} is a field, not a relationship; write {segment[:-3]}__r to follow it"
        if segment.endswith("Id") and len(segment) > 2 and "__" not in segment:
            return f"source {source!r}: {segment!r} is an id field, not a relationship; write {segment[:-2]} to follow it"
        if "__" in segment and not segment.lower().endswith("__r"):
            return f"source {source!r}: {segment!r} is not a relationship name (custom ones end in __r)"
    levels = len(soql_path(source).split(".")) - 1
    if levels > SOQL_MAX_RELATIONSHIP_LEVELS:
        return (
            f"source {source!r} follows {levels} relationships from Order; "
            f"SOQL allows at most {SOQL_MAX_RELATIONSHIP_LEVELS}"
        )
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return ""  # compound fields (address, location) and child lists are not text


def _get(node: Mapping[str, Any], key: str) -> Any:
    if key in node:
        return node[key]
    # SOQL names are case-insensitive; records come back in canonical case, mappings may not.
    folded = key.casefold()
    for k, v in node.items():
        if k.casefold() == folded:
            return v
    return None


# Source path -> its segments below Order. Read per field per record: split once per path (a
# mapping names a few dozen paths at most, so this stays small).
_SEGMENTS: dict[str, tuple[str, ...]] = {}


def read_source(order_record: Mapping[str, Any], source: str) -> str:
    """The text at `source` in a simple-salesforce Order record; "" for any empty lookup on the way."""
    segments = _SEGMENTS.get(source)
    if segments is None:
        segments = _SEGMENTS[source] = tuple(soql_path(source).split("."))
    node: Any = order_record
    for segment in segments:
        # Records are dicts (JSON); a Mapping check for anything else, as before.
        if type(node) is not dict and not isinstance(node, Mapping):
            return ""
        node = node[segment] if segment in node else _get(node, segment)
    return _text(node)


def source_segments(source: str) -> tuple[str, ...]:
    """The segments below Order that `read_source` follows for `source`."""
    segments = _SEGMENTS.get(source)
    if segments is None:
        segments = _SEGMENTS[source] = tuple(soql_path(source).split("."))
    return segments


def read_values(order_record: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> list[Any]:
    """The values `read_source` makes its text of, one per path of `source_segments` (None
    for an empty lookup on the way). Equal values read equal text, so a digest of these
    covers what an evaluation reads, without the cost of making text of every one."""
    out: list[Any] = []
    for segments in paths:
        node: Any = order_record
        for segment in segments:
            if type(node) is not dict and (node is None or not isinstance(node, Mapping)):
                node = None
                break
            node = node[segment] if segment in node else _get(node, segment)
        out.append(node)
    return out


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """How one target path gets its value."""

    target: str
    target_field: TargetField
    sources: tuple[str, ...] = ()
    value: str | tuple[str, ...] | None = None
    default: str | None = None
    transforms: tuple[Transform, ...] = ()

    def normalised(self) -> dict[str, Any]:
        return {
            "from": list(self.sources),
            "value": list(self.value) if isinstance(self.value, tuple) else self.value,
            "default": self.default,
            "transforms": [t.normalised() for t in self.transforms],
        }

    def all_sources(self) -> tuple[str, ...]:
        return (*self.sources, *(p for t in self.transforms for p in t.sources()))

    def evaluate(self, ctx: EvalContext) -> str | list[str]:
        if isinstance(self.value, tuple):
            return list(self.value)
        if self.value is not None:
            return finish(self.value, self.target_field)  # same rules as mapped values
        current = ""
        for source in self.sources:
            value = ctx.read(source)
            if value.strip():
                current = value
                break
        for transform in self.transforms:
            current = transform(current, ctx)
        if not current.strip() and self.default is not None:
            current = self.default
        return finish(current, self.target_field)


def finish(value: str, target: TargetField) -> str | list[str]:
    """Make a value the target accepts for `target`, or "" (unset) when it cannot be made so."""
    text = strip_control(value).strip()
    if target.kind == "string_list":
        # Salesforce multi-select picklists hold "a;b;c".
        items = [truncate(i.strip(), target.max_length or len(i)) for i in text.split(";")]
        return [i for i in items if i]
    if target.kind == "enum":
        return text if text in target.enum else ""
    if target.format == "phone":
        # A cut phone number is a wrong number, and a longer one would be refused: leave it unset.
        return text if target.max_length is None or len(text) <= target.max_length else ""
    if target.format == "email":
        # A malformed address would be refused, and a cut address is malformed.
        ok = (target.max_length is None or len(text) <= target.max_length) and _EMAIL.match(text)
        return text if ok else ""
    if target.format == "country":
        return country_code(text)  # idempotent on alpha-2, "" for anything unknown
    return truncate(text, target.max_length) if target.max_length else text


def _normalise_payload_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )


@dataclass(frozen=True, slots=True)
class CustomerMapping:
    """A compiled mapping: what to read from Salesforce and how to build a customer payload for
    one billing system (`system`), under that system's rules."""

    file: Path
    fields: tuple[FieldPlan, ...]
    target: str = "customer"
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
    system: str = DEFAULT_SYSTEM
    # The system's groups of fields accepted only together (from its schema).
    together: tuple[Together, ...] = field(default=(), compare=False)
    fingerprint: str = field(default="", init=False)

    def __post_init__(self) -> None:
        plan: dict[str, Any] = {
            "version": PLAN_VERSION,
            "target": self.target,
            "fields": {f.target: f.normalised() for f in self.fields},
        }
        if self.system != DEFAULT_SYSTEM:
            # Only when not the default, so mappings written before `system:` existed keep
            # their fingerprint (a changed one re-checks every linked account).
            plan["system"] = self.system
        digest = hashlib.sha256(_normalise_payload_json(plan).encode("ascii")).hexdigest()
        object.__setattr__(self, "fingerprint", digest)

    @property
    def rules(self) -> TargetRules:
        rules = rules_for(self.system)
        if rules is None:  # compile_spec only builds mappings for registered systems
            raise LookupError(f"no billing system {self.system!r} is registered")
        return rules

    def targets(self) -> list[str]:
        return sorted(f.target for f in self.fields)

    def sources(self) -> list[str]:
        """Every source path the mapping reads, as written (Order.X / Account.X), once each.

        In target order (the plan is sorted by target, so key order in the file does not matter).
        """
        return list(dict.fromkeys(s for f in self.fields for s in f.all_sources()))

    def soql_fields(self) -> list[str]:
        """SOQL field paths relative to Order. AccountId is always there: links are keyed by it."""
        # SOQL names are case-insensitive and Salesforce refuses a field selected twice.
        unique: dict[str, str] = {}
        for path in ("AccountId", *(soql_path(s) for s in self.sources())):
            unique.setdefault(path.casefold(), path)
        return sorted(unique.values())

    def evaluate(
        self,
        order_record: Mapping[str, Any],
        *,
        link: Callable[[str], str | None] = lambda _id: None,
    ) -> dict[str, Any]:
        ctx = EvalContext(read=lambda source: read_source(order_record, source), link=link)
        flat: dict[str, Any] = {}
        for plan in self.fields:
            # A list field with nothing in it is an empty list: there is no "unset" for arrays.
            flat[plan.target] = plan.evaluate(ctx)
        for rule in self.together:
            _all_or_nothing(flat, rule)
        return unflatten(flat, self.rules.tag_field)


def _in_group(path: str, group: str) -> bool:
    return path == group or path.startswith(f"{group}.")


def _all_or_nothing(flat: dict[str, Any], rule: Together) -> None:
    """When a record leaves one group of `rule` empty, unset the whole object instead of
    sending a part the system would refuse."""
    mapped = [t for t in flat if t.startswith(f"{rule.object}.")]
    if not mapped:
        return
    if all(any(flat[t] for t in mapped if _in_group(t, g)) for g in rule.groups):
        return
    for t in mapped:
        del flat[t]
    flat[rule.object] = ""


def unflatten(flat: Mapping[str, Any], tag_field: str) -> dict[str, Any]:
    """{"address.city": "X", "<tag_field>.a.b": "Y"} -> nested; a tag key is one level."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if path.startswith(f"{tag_field}."):
            parts = [tag_field, path[len(tag_field) + 1 :]]
        else:
            parts = path.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def flatten(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"address": {"city": "X"}} -> {"address.city": "X"}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def payload_hash(payload: Mapping[str, Any]) -> str:
    """sha256 of the payload's canonical JSON (sorted keys), so key order never matters."""
    return hashlib.sha256(_normalise_payload_json(payload).encode("ascii")).hexdigest()


def diff_payloads(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Dotted paths of `new` whose values differ from `old` (all of them when old is None).

    Unset is unset: None, "" and a missing key are equal. Paths only in `old` are not listed,
    because an update leaves fields it does not name alone.
    """
    before = flatten(old or {})

    def unset(value: Any) -> bool:
        return value is None or value == "" or value == []

    changed = []
    for path, value in flatten(new).items():
        if old is None:
            changed.append(path)
        elif path in before:
            if before[path] != value and not (unset(before[path]) and unset(value)):
                changed.append(path)
        elif unset(value):
            # "" on an object ("shipping": "") clears every field the old payload had under it.
            if any(p.startswith(f"{path}.") and not unset(v) for p, v in before.items()):
                changed.append(path)
        else:
            changed.append(path)
    return sorted(changed)


# --- compiling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A source path in the file, where it is, and whether a `link` reads it."""

    path: str
    where: KeyPath
    linked: bool


@dataclass(frozen=True, slots=True)
class Compiled:
    mapping: CustomerMapping | None
    problems: tuple[Problem, ...]
    sources: tuple[SourceRef, ...]
    collector: Collector | None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _kind_word(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "empty (null)"
    return type(value).__name__


def _check_static(
    out: Collector, target: TargetField, located: Located, what: str, label: str
) -> str | tuple[str, ...] | None:
    value = located.value
    for item in value if isinstance(value, list) else [value]:
        shape = secret_shape(item) if isinstance(item, str) else None
        if shape is not None:
            # A mapping file is shared and committed like code; a key in it is a leaked key.
            out.at(
                located.where,
                f"{what} looks like a secret ({shape}); secrets never belong in a mapping file: "
                "remove it, and rotate it if it is real",
            )
            return None
    if target.kind == "string_list":
        items = value if isinstance(value, list) else [value] if what == "default" else None
        if items is None or not all(isinstance(i, str) for i in items):
            out.at(
                located.where,
                f"{target.path} is a list of text; {what} must be a list of quoted strings",
            )
            return None
        for item in items:
            if target.max_length is not None and len(item) > target.max_length:
                out.at(
                    located.where,
                    f"{what} is longer than {label}'s {target.max_length} characters for {target.path}",
                )
                return None
        return tuple(items) if what == "value" else ";".join(items)
    if not isinstance(value, str):
        # YAML reads unquoted 01234 as a number (dropping the zero) and yes/no as true/false.
        hint = (
            "; put it in quotes so that YAML keeps it as written"
            if isinstance(value, bool | int | float)
            else ""
        )
        out.at(located.where, f"{target.path} takes text; {what} is {_kind_word(value)}{hint}")
        return None
    if target.kind == "enum" and value not in target.enum:
        allowed = ", ".join(repr(e) for e in target.enum if e)
        out.at(
            located.where, f"{value!r} is not a {target.path} {label} accepts; use one of {allowed}"
        )
        return None
    limit = target.max_length
    if limit is not None and len(value.strip()) > limit:
        out.at(
            located.where,
            f"{what} is {len(value.strip())} characters; {label} allows {limit} for {target.path}",
        )
        return None
    if value.strip() and finish(value, target) == "":
        why = (
            "not an email address"
            if target.format == "email"
            else "not a country; use a name or an ISO code like DE"
            if target.format == "country"
            else "not a value it accepts"
        )
        out.at(located.where, f"{label} would refuse {value!r} for {target.path}: {why}")
        return None
    return value


def _resolve_target(out: Collector, spec_field: FieldSpec, target: Target) -> TargetField | None:
    path = spec_field.target
    where = spec_field.where
    schema, rules, label = target.schema, target.rules, target.label
    tag = rules.tag_field
    if path.startswith(target.tag_prefix):
        key = path[len(target.tag_prefix) :]
        forbidden = "".join(f"'{c}', " for c in schema.tag_key_forbidden)
        if not key.strip() or key != key.strip():
            out.at(where, f"{tag} key {key!r} is empty or has surrounding spaces")
        elif key in RESERVED_TAG_KEYS:
            out.at(where, f"{tag}.{key} is written by the connector itself; choose another key")
        elif len(key) > rules.tag_key_max:
            out.at(
                where,
                f"{tag} key {key!r} is {len(key)} characters; {label} allows {rules.tag_key_max}",
            )
        elif any(c in key for c in f"{schema.tag_key_forbidden}."):
            out.at(
                where,
                f"{tag} key {key!r} must not contain "
                + (f"{forbidden[:-2]} ({label}) or " if forbidden else "")
                + "'.' (paths)",
            )
        else:
            return target.tag_field(path)
        return None
    if path in schema.leaves:
        return schema.leaves[path]
    custom = schema.custom_field(path)
    if isinstance(custom, TargetField):
        return custom
    if isinstance(custom, str):
        out.at(where, f"{path} cannot be mapped: {custom}")
        return None
    if path in schema.refused:
        out.at(where, f"{path} cannot be mapped: {schema.refused[path]}")
    elif path in schema.objects:
        parts = sorted(p for p in schema.leaves if p.startswith(f"{path}."))[:3]
        example = ", ".join(parts) if parts else f"{path}.<key>"
        out.at(where, f"{path} is an object; map its fields instead ({example}, ...)")
    else:
        known = [*schema.leaves, *(f"{o}." for o in schema.objects)]
        close = difflib.get_close_matches(path, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        elsewhere = _custom_elsewhere(path, schema)
        if elsewhere:
            hint = (
                f": {path} is a custom field of {elsewhere}, and a {label} {schema.object} "
                f"has no custom fields; keep the value under {tag}.<key> instead"
            )
        out.at(where, f"unknown target {path!r} for a {label} {schema.object}{hint}")
    return None


def _custom_elsewhere(path: str, schema: TargetSchema) -> str:
    """The systems whose custom fields look like `path` ("Chargebee customers"), for the
    message that refuses it where there are none."""
    names = []
    for kind in systems().values():
        build = kind.schemas.get(schema.object)
        other = build() if build else None
        if other is not None and other.system != schema.system and other.custom_field(path):
            names.append(f"{other.label} {other.object}s")
    return " and ".join(names)


def compile_spec(spec: MappingSpec, problems: Iterable[Problem] = ()) -> Compiled:
    """Check a parsed spec against the target schema and SOQL rules; build the plan if it is sound."""
    out = Collector(spec.doc)
    out.problems.extend(problems)
    system = spec.system or DEFAULT_SYSTEM
    kind = systems().get(system)
    if kind is None:
        out.value_at(
            ("system",),
            f"unknown billing system {system!r}; known: {', '.join(sorted(systems()))}",
        )
        return Compiled(None, tuple(out.problems), (), out)
    resolved = resolve_target(system, spec.target)
    if resolved is None:
        out.value_at(
            ("target",), f"unknown target {spec.target!r}; known: {', '.join(kind.schemas)}"
        )
        return Compiled(None, tuple(out.problems), (), out)
    plans: list[FieldPlan] = []
    refs: list[SourceRef] = []
    seen: dict[str, FieldSpec] = {}
    for spec_field in spec.fields:
        ok = True
        for other, first in seen.items():
            a, b = sorted((other, spec_field.target), key=len)
            if b.startswith(f"{a}."):
                line = spec.doc.where(first.where).line
                out.at(
                    spec_field.where,
                    f"{spec_field.target} overlaps {other} (line {line}); map the object or its fields, not both",
                )
                ok = False
        seen[spec_field.target] = spec_field
        target = _resolve_target(out, spec_field, resolved)
        linked = any(isinstance(t, Link) for t, _ in spec_field.transforms)
        for source in spec_field.sources:
            why = check_source_path(source.value)
            if why:
                out.at(source.where, why)
                ok = False
            else:
                refs.append(SourceRef(source.value, source.where, linked))
        for transform, where in spec_field.transforms:
            for i, source_path in enumerate(transform.sources()):
                item_where = value_path(
                    spec.doc,
                    (*where, "join", "sources", i)
                    if transform.name == "join"
                    else (*where, "template"),
                )
                why = check_source_path(source_path)
                if why:
                    out.at(item_where, why)
                    ok = False
                else:
                    refs.append(SourceRef(source_path, item_where, False))
        if target is None:
            continue
        _check_transforms_fit(out, target, spec_field, resolved.label)
        value = default = None
        if spec_field.value is not None:
            value = _check_static(out, target, spec_field.value, "value", resolved.label)
            ok = ok and value is not None
        if spec_field.default is not None:
            default = _check_static(out, target, spec_field.default, "default", resolved.label)
            ok = ok and default is not None
        if ok:
            plans.append(
                FieldPlan(
                    target=spec_field.target,
                    target_field=target,
                    sources=tuple(s.value for s in spec_field.sources),
                    value=value,
                    default=default if isinstance(default, str) else None,
                    transforms=tuple(t for t, _ in spec_field.transforms),
                )
            )
    _check_whole(out, spec, resolved)
    errors = [p for p in out.problems if p.severity == "error"]
    mapping = None
    if not errors:
        warnings = tuple(p for p in out.problems if p.severity == "warning")
        mapping = CustomerMapping(
            spec.file,
            tuple(sorted(plans, key=lambda p: p.target)),
            spec.target,
            warnings,
            system=system,
            together=resolved.schema.together,
        )
    return Compiled(mapping, tuple(out.problems), tuple(refs), out)


def _check_transforms_fit(
    out: Collector, target: TargetField, spec_field: FieldSpec, label: str
) -> None:
    """Transform arguments that cannot give a value the target accepts, and silent unsets."""
    names = [t.name for t, _ in spec_field.transforms]
    if target.kind == "enum":
        for transform, where in spec_field.transforms:
            if not isinstance(transform, Lookup):
                continue
            outputs: list[tuple[str, KeyPath]] = [
                (v, (*where, "lookup", "map", k, "__value__")) for k, v in transform.table
            ]
            if transform.default is not None:
                outputs.append((transform.default, (*where, "lookup", "default", "__value__")))
            for value, value_where in outputs:
                if value not in target.enum:
                    allowed = ", ".join(repr(e) for e in target.enum if e)
                    out.at(
                        value_where,
                        f"{value!r} is not a {target.path} {label} accepts; use one of {allowed}",
                    )
    if target.format == "phone" and spec_field.sources and "phone" not in names:
        limit = f"{label}'s {target.max_length} characters" if target.max_length else "the limit"
        out.at(
            spec_field.where,
            f"{target.path} without the phone transform: numbers typed with spaces or an extension "
            f"often pass {limit} and are then left unset; add transforms: [phone]",
            "warning",
        )


def _check_whole(out: Collector, spec: MappingSpec, target: Target) -> None:
    """Rules about the set of targets rather than one of them."""
    rules, label = target.rules, target.label
    tags = [f for f in spec.fields if f.target.startswith(target.tag_prefix)]
    mappable = rules.tag_keys_max - len(RESERVED_TAG_KEYS)
    if len(tags) > mappable:
        out.at(
            tags[mappable].where,
            f"too many {rules.tag_field} keys ({len(tags)}); {label} allows {rules.tag_keys_max} "
            f"per {spec.target} and the connector uses {len(RESERVED_TAG_KEYS)}, so at most {mappable}",
        )
    for rule in target.schema.together:
        mapped = {g: [f for f in spec.fields if _in_group(f.target, g)] for g in rule.groups}
        missing = [g for g, fields in mapped.items() if not fields]
        if not missing or len(missing) == len(rule.groups):
            continue
        for group, fields in mapped.items():
            if fields:
                message = rule.missing.get(group) or (
                    f"{group} needs {', '.join(missing)} too: {label} accepts "
                    f"{rule.object} only with all of {', '.join(rule.groups)}"
                )
                out.at(fields[0].where, message)


# --- describe check ----------------------------------------------------------------------------

Describe = Callable[[str], dict[str, Any]]


def check_against_describe(compiled: Compiled, describe: Describe) -> list[Problem]:
    """Check every source against Salesforce's describe: it exists, is readable, and is no formula."""
    out = compiled.collector
    if out is None:
        return []
    before = len(out.problems)
    described: dict[str, dict[str, dict[str, Any]] | str] = {}

    def fields_of(sobject: str) -> dict[str, dict[str, Any]] | str:
        if sobject not in described:
            try:
                result = describe(sobject)
                described[sobject] = {
                    str(f.get("name", "")).casefold(): f for f in result.get("fields", [])
                }
            # Any failure of the callback is a problem to report, not a crash.
            except Exception as exc:
                described[sobject] = f"cannot describe {sobject}: {exc}"
        return described[sobject]

    def problem(ref: SourceRef, message: str, severity: Severity = "error") -> None:
        out.at(ref.where, message, severity)

    for ref in compiled.sources:
        segments = soql_path(ref.path).split(".")
        sobject = "Order"
        failed = False
        for segment in segments[:-1]:
            fields = fields_of(sobject)
            if isinstance(fields, str):
                problem(ref, f"source {ref.path!r}: {fields}")
                failed = True
                break
            rel = next(
                (
                    f
                    for f in fields.values()
                    if str(f.get("relationshipName") or "").casefold() == segment.casefold()
                ),
                None,
            )
            if rel is None or not rel.get("referenceTo"):
                problem(ref, f"source {ref.path!r}: {sobject} has no relationship {segment!r}")
                failed = True
                break
            targets = list(rel["referenceTo"])
            if len(targets) > 1:
                problem(
                    ref,
                    f"source {ref.path!r}: {segment} can point to {', '.join(targets)}; "
                    f"only fields that all of them have can be read through it",
                    "warning",
                )
            sobject = targets[0]
        if failed:
            continue
        fields = fields_of(sobject)
        if isinstance(fields, str):
            problem(ref, f"source {ref.path!r}: {fields}")
            continue
        name = segments[-1]
        info = fields.get(name.casefold())
        if info is None:
            problem(
                ref,
                f"source {ref.path!r}: {sobject} has no field {name!r}, or the integration user cannot read it",
            )
            continue
        kind = info.get("type")
        if kind in ("address", "location"):
            problem(
                ref,
                f"source {ref.path!r}: {name} is a compound {kind} field; map its parts (e.g. BillingCity)",
            )
        if info.get("calculated"):
            problem(
                ref,
                f"source {ref.path!r}: {sobject}.{name} is a formula field; a change in its result does not "
                "move SystemModstamp, so the connector sees it only when the record changes otherwise",
                "warning",
            )
        if ref.linked and not (
            kind in ("id", "reference")
            and (
                (kind == "id" and sobject == "Account")
                or "Account" in (info.get("referenceTo") or [])
            )
        ):
            problem(
                ref,
                f"source {ref.path!r}: link needs an Account id (a lookup to Account), not a {kind} field",
            )
    return out.problems[before:]


# --- loading -----------------------------------------------------------------------------------


def _mapping_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )


def _position(problem: Problem) -> tuple[int, int]:
    return (problem.line, problem.column)


def compile_file(path: Path) -> tuple[Compiled | None, list[Problem]]:
    try:
        text = read_text(path)  # names the line and column of a byte that is not UTF-8
    except ConfigError as exc:
        return None, [problem_from_config_error(exc, path)]
    spec, problems = read_spec(path, text)
    if spec is None:
        return None, problems
    compiled = compile_spec(spec, problems)
    return compiled, sorted(compiled.problems, key=_position)


def load_mapping(path: Path) -> CustomerMapping:
    """Compile one mapping file. Raises MappingErrors with every problem when any is an error."""
    compiled, problems = compile_file(path)
    if compiled is None or compiled.mapping is None or any(p.severity == "error" for p in problems):
        raise MappingErrors(problems)
    return compiled.mapping


def _check_directory(
    directory: Path, describe: Describe | None
) -> tuple[list[Problem], list[Compiled]]:
    if not directory.is_dir():
        return [Problem(directory, 1, 1, "mappings directory does not exist")], []
    problems: list[Problem] = []
    customers: list[Compiled] = []
    for path in _mapping_files(directory):
        compiled, found = compile_file(path)
        if compiled is None or compiled.collector is None:
            problems.extend(found)
            continue
        target = (
            compiled.collector.doc.data.get("target")
            if isinstance(compiled.collector.doc.data, dict)
            else None
        )
        if target == "customer":
            if customers:
                first = customers[0].collector.doc.file if customers[0].collector else "?"
                compiled.collector.value_at(
                    ("target",), f"a second customer mapping (the first is {first}); keep one"
                )
                found.append(compiled.collector.problems[-1])
            customers.append(compiled)
        if describe is not None:
            found.extend(check_against_describe(compiled, describe))
        problems.extend(sorted(found, key=_position))
    if not customers and not any(p.severity == "error" for p in problems):
        problems.append(
            Problem(directory, 1, 1, "no mapping file with 'target: customer' in this directory")
        )
    return problems, customers


def check_mappings(directory: Path, *, describe: Describe | None = None) -> list[Problem]:
    """Every problem in every mapping file of `directory` (errors and warnings), in file order."""
    problems, _ = _check_directory(directory, describe)
    return problems


def load_mappings(directory: Path) -> CustomerMapping:
    """The customer mapping of `directory`. Raises MappingErrors when any file has an error."""
    problems, customers = _check_directory(directory, None)
    if (
        any(p.severity == "error" for p in problems)
        or len(customers) != 1
        or customers[0].mapping is None
    ):
        raise MappingErrors(problems or [Problem(directory, 1, 1, "no usable customer mapping")])
    return customers[0].mapping
