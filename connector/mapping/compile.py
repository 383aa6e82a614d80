"""Mapping specs compiled into plans: checked against Stripe's schema and SOQL rules, then evaluated.

`compile_spec` turns a parsed `MappingSpec` into a frozen `CustomerMapping` (the plan) and every
problem found; `CustomerMapping.evaluate` maps one Salesforce Order record to a Stripe payload.
Target paths, types, enums and lengths come only from `stripe_schema.create_params_schema()`.
Evaluation must never produce a value Stripe would refuse: anything that cannot be sent as is
is cut to the limit (free text) or left unset (phone, email, country, enum), never guessed.
It never talks to Salesforce or Stripe; the optional describe check uses a callback.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from connector.billing.base import RESERVED_METADATA_KEYS
from connector.billing.stripe_schema import create_params_schema, resolve, update_params_schema
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
from connector.yaml_source import KeyPath, read_text

# Bump when evaluation rules change, so fingerprints (and so the engine's "mapping changed,
# re-sync everything" decision) change with them.
PLAN_VERSION = 1

# Stripe's metadata limits: 50 keys per object, keys up to 40 characters, values up to 500.
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX_LENGTH = 40
METADATA_VALUE_MAX_LENGTH = 500
# The connector writes RESERVED_METADATA_KEYS on every customer, so mappings get the rest.
METADATA_MAPPABLE_KEYS = METADATA_MAX_KEYS - len(RESERVED_METADATA_KEYS)

# Salesforce allows at most five levels of child-to-parent relationships in one SOQL query.
SOQL_MAX_RELATIONSHIP_LEVELS = 5
ROOTS = ("Order", "Account")

# Parameters a mapping must not set, and why (they exist in Stripe's create schema).
NOT_MAPPABLE: Mapping[str, str] = {
    "expand": "a request option, not a customer field",
    "source": "payment details never come from Salesforce",
    "payment_method": "payment details never come from Salesforce",
    "invoice_settings.default_payment_method": "payment details never come from Salesforce",
    "test_clock": "test clocks are set by hand in test mode",
    "tax_id_data": "tax ids are separate objects that can only be added on create",
}

Kind = Literal["string", "enum", "string_list"]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_IDENTIFIER = re.compile(
    r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:__[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)*$"
)


@dataclass(frozen=True, slots=True)
class TargetField:
    """One settable leaf of a billing object, as the schema describes it."""

    path: str
    kind: Kind
    max_length: int | None = None
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetSchema:
    """What a target object accepts: its leaves, its objects, and what cannot be mapped."""

    leaves: Mapping[str, TargetField]
    objects: frozenset[str]  # paths that are objects (address, shipping, shipping.address)
    refused: Mapping[str, str]  # path -> why it cannot be mapped


def _object_variant(node: Any) -> Any:
    """Stripe writes "object or '' to unset" as anyOf; the object (or typed) variant is the shape."""
    node = resolve(node)
    for variant in node.get("anyOf", ()):
        variant = resolve(variant)
        if variant.get("enum") != [""]:
            return variant
    return node


def _walk_schema(
    node: Any,
    prefix: str,
    leaves: dict[str, TargetField],
    objects: set[str],
    refused: dict[str, str],
) -> None:
    for name, child in resolve(node).get("properties", {}).items():
        path = f"{prefix}{name}"
        shape = _object_variant(child)
        kind = shape.get("type")
        if path in NOT_MAPPABLE:
            refused[path] = NOT_MAPPABLE[path]
        elif "additionalProperties" in shape:
            objects.add(path)  # metadata: keys are free, checked separately
        elif kind == "object" or "properties" in shape:
            objects.add(path)
            _walk_schema(shape, f"{path}.", leaves, objects, refused)
        elif kind == "string" and "enum" in shape:
            leaves[path] = TargetField(path, "enum", None, tuple(shape["enum"]))
        elif kind == "string":
            leaves[path] = TargetField(path, "string", shape.get("maxLength"))
        elif kind == "array" and resolve(shape.get("items", {})).get("type") == "string":
            item = resolve(shape["items"])
            leaves[path] = TargetField(path, "string_list", item.get("maxLength"))
        else:
            refused[path] = (
                f"it is {'an' if str(kind)[:1] in 'aeiou' else 'a'} {kind or 'complex value'}; mappings set text fields"
            )


@cache
def customer_schema() -> TargetSchema:
    leaves: dict[str, TargetField] = {}
    objects: set[str] = set()
    refused: dict[str, str] = {}
    _walk_schema(create_params_schema(), "", leaves, objects, refused)
    update_leaves: dict[str, TargetField] = {}
    _walk_schema(update_params_schema(), "", update_leaves, set(), {})
    for path in list(leaves):
        if path not in update_leaves:
            # The connector updates customers too; a create-only parameter would be lost.
            refused[path] = "Stripe accepts it only when a customer is created"
            del leaves[path]
    return TargetSchema(leaves, frozenset(objects), refused)


# One schema per target object; product, price and subscription follow the same pattern.
TARGET_SCHEMAS: Mapping[str, Callable[[], TargetSchema]] = {"customer": customer_schema}


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


def read_source(order_record: Mapping[str, Any], source: str) -> str:
    """The text at `source` in a simple-salesforce Order record; "" for any empty lookup on the way."""
    node: Any = order_record
    for segment in soql_path(source).split("."):
        if not isinstance(node, Mapping):
            return ""
        node = _get(node, segment)
    return _text(node)


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
        current = next((v for v in (ctx.read(s) for s in self.sources) if v.strip()), "")
        for transform in self.transforms:
            current = transform(current, ctx)
        if not current.strip() and self.default is not None:
            current = self.default
        return finish(current, self.target_field)


def finish(value: str, target: TargetField) -> str | list[str]:
    """Make a value one Stripe accepts for `target`, or "" (unset) when it cannot be made so."""
    text = strip_control(value).strip()
    path = target.path
    if target.kind == "string_list":
        # Salesforce multi-select picklists hold "a;b;c".
        items = [truncate(i.strip(), target.max_length or len(i)) for i in text.split(";")]
        return [i for i in items if i]
    if target.kind == "enum":
        return text if text in target.enum else ""
    if path == "phone":
        # A cut phone number is a wrong number; Stripe refuses longer ones: leave it unset.
        return text if len(text) <= (target.max_length or 20) else ""
    if path == "email":
        # Stripe refuses malformed addresses, and a cut address is malformed.
        ok = len(text) <= (target.max_length or 512) and _EMAIL.match(text)
        return text if ok else ""
    if path.endswith("address.country"):
        return country_code(text)  # idempotent on alpha-2, "" for anything unknown
    limit = METADATA_VALUE_MAX_LENGTH if path.startswith("metadata.") else target.max_length
    return truncate(text, limit) if limit else text


def _normalise_payload_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )


@dataclass(frozen=True, slots=True)
class CustomerMapping:
    """A compiled mapping: what to read from Salesforce and how to build a Stripe customer payload."""

    file: Path
    fields: tuple[FieldPlan, ...]
    target: str = "customer"
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
    fingerprint: str = field(default="", init=False)

    def __post_init__(self) -> None:
        plan = {
            "version": PLAN_VERSION,
            "target": self.target,
            "fields": {f.target: f.normalised() for f in self.fields},
        }
        digest = hashlib.sha256(_normalise_payload_json(plan).encode("ascii")).hexdigest()
        object.__setattr__(self, "fingerprint", digest)

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
            value = plan.evaluate(ctx)
            # Stripe's schema has no "unset" for arrays (preferred_locales): an empty list it is.
            flat[plan.target] = value
        shipping = [t for t in flat if t.startswith("shipping.")]
        if shipping:
            address = [flat[t] for t in shipping if t.startswith("shipping.address.")]
            if not flat.get("shipping.name") or not any(address):
                # Stripe needs both a name and an address for shipping; without them, unset it.
                for t in shipping:
                    del flat[t]
                flat["shipping"] = ""
        return unflatten(flat)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if path.startswith("metadata."):
            parts = ["metadata", path[len("metadata.") :]]
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
    out: Collector, target: TargetField, located: Located, what: str
) -> str | tuple[str, ...] | None:
    value = located.value
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
                    f"{what} is longer than Stripe's {target.max_length} characters for {target.path}",
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
            located.where, f"{value!r} is not a {target.path} Stripe accepts; use one of {allowed}"
        )
        return None
    limit = METADATA_VALUE_MAX_LENGTH if target.path.startswith("metadata.") else target.max_length
    if limit is not None and len(value.strip()) > limit:
        out.at(
            located.where,
            f"{what} is {len(value.strip())} characters; Stripe allows {limit} for {target.path}",
        )
        return None
    if value.strip() and finish(value, target) == "":
        why = (
            "not an email address"
            if target.path == "email"
            else "not a country; use a name or an ISO code like DE"
            if target.path.endswith("country")
            else "not a value it accepts"
        )
        out.at(located.where, f"Stripe would refuse {value!r} for {target.path}: {why}")
        return None
    return value


def _resolve_target(
    out: Collector, spec_field: FieldSpec, schema: TargetSchema
) -> TargetField | None:
    path = spec_field.target
    where = spec_field.where
    if path.startswith("metadata."):
        key = path[len("metadata.") :]
        if not key.strip() or key != key.strip():
            out.at(where, f"metadata key {key!r} is empty or has surrounding spaces")
        elif key in RESERVED_METADATA_KEYS:
            out.at(where, f"metadata.{key} is written by the connector itself; choose another key")
        elif len(key) > METADATA_KEY_MAX_LENGTH:
            out.at(
                where,
                f"metadata key {key!r} is {len(key)} characters; Stripe allows {METADATA_KEY_MAX_LENGTH}",
            )
        elif any(c in key for c in "[]."):
            out.at(where, f"metadata key {key!r} must not contain '[', ']' (Stripe) or '.' (paths)")
        else:
            return TargetField(path, "string", METADATA_VALUE_MAX_LENGTH)
        return None
    if path in schema.leaves:
        return schema.leaves[path]
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
        out.at(where, f"unknown target {path!r} for a Stripe customer{hint}")
    return None


def compile_spec(spec: MappingSpec, problems: Iterable[Problem] = ()) -> Compiled:
    """Check a parsed spec against the target schema and SOQL rules; build the plan if it is sound."""
    out = Collector(spec.doc)
    out.problems.extend(problems)
    schema_for = TARGET_SCHEMAS.get(spec.target)
    if schema_for is None:
        out.value_at(
            ("target",), f"unknown target {spec.target!r}; known: {', '.join(TARGET_SCHEMAS)}"
        )
        return Compiled(None, tuple(out.problems), (), out)
    schema = schema_for()
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
        target = _resolve_target(out, spec_field, schema)
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
        _check_transforms_fit(out, target, spec_field)
        value = default = None
        if spec_field.value is not None:
            value = _check_static(out, target, spec_field.value, "value")
            ok = ok and value is not None
        if spec_field.default is not None:
            default = _check_static(out, target, spec_field.default, "default")
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
    _check_whole(out, spec)
    errors = [p for p in out.problems if p.severity == "error"]
    mapping = None
    if not errors:
        warnings = tuple(p for p in out.problems if p.severity == "warning")
        mapping = CustomerMapping(
            spec.file, tuple(sorted(plans, key=lambda p: p.target)), spec.target, warnings
        )
    return Compiled(mapping, tuple(out.problems), tuple(refs), out)


def _check_transforms_fit(out: Collector, target: TargetField, spec_field: FieldSpec) -> None:
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
                        f"{value!r} is not a {target.path} Stripe accepts; use one of {allowed}",
                    )
    if target.path == "phone" and spec_field.sources and "phone" not in names:
        out.at(
            spec_field.where,
            "phone without the phone transform: numbers typed with spaces or an extension often pass "
            "Stripe's 20 characters and are then left unset; add transforms: [phone]",
            "warning",
        )


def _check_whole(out: Collector, spec: MappingSpec) -> None:
    """Rules about the set of targets rather than one of them."""
    targets = {f.target: f for f in spec.fields}
    metadata = [f for f in spec.fields if f.target.startswith("metadata.")]
    if len(metadata) > METADATA_MAPPABLE_KEYS:
        out.at(
            metadata[METADATA_MAPPABLE_KEYS].where,
            f"too many metadata keys ({len(metadata)}); Stripe allows {METADATA_MAX_KEYS} per customer "
            f"and the connector uses {len(RESERVED_METADATA_KEYS)}, so at most {METADATA_MAPPABLE_KEYS}",
        )
    shipping_address = [f for f in spec.fields if f.target.startswith("shipping.address.")]
    if shipping_address and "shipping.name" not in targets:
        out.at(
            shipping_address[0].where,
            "shipping.address needs shipping.name too: Stripe requires a name with a shipping address",
        )
    if "shipping.name" in targets and not shipping_address:
        out.at(
            targets["shipping.name"].where,
            "shipping.name needs shipping.address fields too: Stripe requires an address with a shipping name",
        )


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
