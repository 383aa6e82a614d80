"""Mapping transforms: small pure functions applied in order to one string, like structlog processors.

Each transform takes the current string (and, for `join`, `template` and `link`, an `EvalContext`
that reads other sources or resolves a linked customer) and returns a new string. "" means empty.
A transform must never raise on any input string and never call out except through the context:
the same record gives the same payload, so unchanged customers are skipped by hash.
`parse_transform` turns one YAML entry (`trim` or `{truncate: 256}`) into a transform, or raises
`TransformArgError` naming the bad argument.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.mapping.countries import to_alpha2

KeyPath = tuple[str | int, ...]

# No dialable number is longer (E.164 allows 15 digits; a "+" and a generous margin); anything
# longer is not a phone number. The target's own limit is applied afterwards by `finish`.
PHONE_MAX_LENGTH = 20


@dataclass(frozen=True, slots=True)
class EvalContext:
    """What a transform may see besides its input: other sources of the record, and links."""

    read: Callable[[str], str]  # a source path ("Account.BillingCity") -> its string value or ""
    link: Callable[[str], str | None]  # a Salesforce account id -> its linked customer id


class Transform(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, value: str, ctx: EvalContext) -> str: ...

    def normalised(self) -> Any:
        """JSON-able form for the plan fingerprint."""
        ...

    def sources(self) -> tuple[str, ...]:
        """Source paths this transform reads (join, template)."""
        ...


class TransformArgError(ValueError):
    """A transform's name or arguments are wrong; `where` is relative to the transform entry."""

    def __init__(self, message: str, where: KeyPath = (), *, at_key: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.at_key = at_key  # point at the key itself (unknown names), not at its value


# --- the plain functions ------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def strip_control(value: str) -> str:
    """Drop control characters (other than tab and newlines) and lone surrogates.

    They cannot be form-encoded as valid UTF-8 (surrogates) or are refused or mangled by
    billing systems (NUL); no one types them on purpose into a Salesforce field.
    """
    if value.isascii() and value.isprintable():
        return value  # nothing to drop; the common case, without running the pattern
    return _CONTROL.sub("", value)


def trim(value: str) -> str:
    return value.strip()


def lower(value: str) -> str:
    return value.lower()


def upper(value: str) -> str:
    return value.upper()


def truncate(value: str, length: int) -> str:
    # Whitespace left at the cut would only be trimmed later anyway; keep it tidy.
    return value if len(value) <= length else value[:length].rstrip()


def country_code(value: str) -> str:
    """ISO 3166-1 alpha-2 from a code or an English name ("USA", "Germany", "gb"); else ""."""
    return to_alpha2(value)


_EXTENSION = re.compile(r"(?i)(?:e?xt\.?|extension|x|#|;|,)")


def phone(value: str) -> str:
    """A dialable number: an optional leading "+" and ASCII digits only.

    Separators (spaces, dots, dashes, brackets) go. An extension ("x12", "ext. 12", "#12") is cut
    off rather than run into the number, which would make a different, wrong number. Digits in
    other scripts become ASCII digits. A result over 20 characters is "" (unset): a cut number
    is a wrong number.
    """
    text = value.strip()
    plus = text.startswith("+")
    match = _EXTENSION.search(text)
    if match:
        text = text[: match.start()]
    digits = []
    for ch in text:
        digit = unicodedata.decimal(ch, None)
        if digit is not None:
            digits.append(str(digit))
            if len(digits) > PHONE_MAX_LENGTH:
                return ""
    if not digits:
        return ""
    result = ("+" if plus else "") + "".join(digits)
    return result if len(result) <= PHONE_MAX_LENGTH else ""


def nth_line(value: str, number: int) -> str:
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    return lines[number - 1] if len(lines) >= number else ""


def lines_from(value: str, number: int, separator: str = ", ") -> str:
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    return separator.join(lines[number - 1 :])


# --- transforms as values -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Simple:
    """A transform without arguments (trim, lower, upper, country_code, phone)."""

    name: str
    func: Callable[[str], str] = field(compare=False, repr=False)

    def __call__(self, value: str, ctx: EvalContext) -> str:
        return self.func(value)

    def normalised(self) -> Any:
        return self.name

    def sources(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Truncate:
    length: int
    name: str = "truncate"

    def __call__(self, value: str, ctx: EvalContext) -> str:
        return truncate(value, self.length)

    def normalised(self) -> Any:
        return {"truncate": self.length}

    def sources(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Line:
    """`{line: 1}`: the Nth non-blank line; `{lines_from: 2}`: lines N.. joined with ", "."""

    number: int
    rest: bool
    name: str = "line"

    def __call__(self, value: str, ctx: EvalContext) -> str:
        return lines_from(value, self.number) if self.rest else nth_line(value, self.number)

    def normalised(self) -> Any:
        return {"lines_from" if self.rest else "line": self.number}

    def sources(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Replace:
    old: str
    new: str
    name: str = "replace"

    def __call__(self, value: str, ctx: EvalContext) -> str:
        # Bounded: a short `old` and long `new` must not blow a huge value up without limit.
        if len(value) > 100_000:
            value = value[:100_000]
        return value.replace(self.old, self.new)

    def normalised(self) -> Any:
        return {"replace": {"old": self.old, "new": self.new}}

    def sources(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Lookup:
    """`{lookup: {map: {Hot: vip}, default: standard}}`; without `default` other values pass."""

    table: tuple[tuple[str, str], ...]
    default: str | None
    name: str = "lookup"

    def __call__(self, value: str, ctx: EvalContext) -> str:
        for key, out in self.table:
            if key == value:
                return out
        return value if self.default is None else self.default

    def normalised(self) -> Any:
        return {"lookup": {"map": dict(sorted(self.table)), "default": self.default}}

    def sources(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Join:
    """`{join: {sources: [...], separator: ", "}}`: the current value, then each source; empty ones skipped."""

    paths: tuple[str, ...]
    separator: str
    name: str = "join"

    def __call__(self, value: str, ctx: EvalContext) -> str:
        parts = [value.strip(), *(ctx.read(p).strip() for p in self.paths)]
        return self.separator.join(p for p in parts if p)

    def normalised(self) -> Any:
        return {"join": {"sources": list(self.paths), "separator": self.separator}}

    def sources(self) -> tuple[str, ...]:
        return self.paths


@dataclass(frozen=True, slots=True)
class Template:
    """`{template: "{Account.BillingCity}, {Account.BillingState}"}`; `{value}` is the current value.

    When every placeholder is empty the result is "" (so an empty address does not become ", ").
    """

    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, placeholder or None)
    name: str = "template"

    def __call__(self, value: str, ctx: EvalContext) -> str:
        out: list[str] = []
        filled = False
        for literal, placeholder in self.parts:
            out.append(literal)
            if placeholder is not None:
                got = value if placeholder == "value" else ctx.read(placeholder)
                got = got.strip()
                filled = filled or bool(got)
                out.append(got)
        return "".join(out).strip() if filled else ""

    def normalised(self) -> Any:
        return {"template": self.text}

    def sources(self) -> tuple[str, ...]:
        return tuple(p for _, p in self.parts if p is not None and p != "value")


@dataclass(frozen=True, slots=True)
class Link:
    """A Salesforce account id -> the customer id linked to that account (or "" when none)."""

    name: str = "link"

    def __call__(self, value: str, ctx: EvalContext) -> str:
        account_id = value.strip()
        if not account_id:
            return ""
        return ctx.link(account_id) or ""

    def normalised(self) -> Any:
        return "link"

    def sources(self) -> tuple[str, ...]:
        return ()


SIMPLE: Mapping[str, Callable[[str], str]] = {
    "trim": trim,
    "lower": lower,
    "upper": upper,
    "country_code": country_code,
    "phone": phone,
}

# Every transform name, for "unknown transform" messages and docs.
NAMES: tuple[str, ...] = (
    "trim",
    "lower",
    "upper",
    "truncate",
    "replace",
    "lookup",
    "join",
    "template",
    "country_code",
    "phone",
    "link",
    "line",
    "lines_from",
)


def _positive_int(arg: Any, name: str) -> int:
    if isinstance(arg, bool) or not isinstance(arg, int) or arg < 1:
        raise TransformArgError(
            f"{name} needs a whole number of at least 1, e.g. {{{name}: 2}}", (name,)
        )
    return arg


def _string(arg: Any, what: str, where: KeyPath) -> str:
    if not isinstance(arg, str):
        raise TransformArgError(f"{what} must be a string (quote it in YAML)", where)
    return arg


def _check_keys(
    arg: Any, name: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, Any]:
    if not isinstance(arg, dict):
        raise TransformArgError(f"{name} needs a mapping with {', '.join(allowed)}", (name,))
    for key in arg:
        if key not in allowed:
            raise TransformArgError(
                f"unknown {name} argument {key!r}; expected {', '.join(allowed)}",
                (name, key),
                at_key=True,
            )
    for key in required:
        if key not in arg:
            raise TransformArgError(f"{name} needs {key!r}", (name,))
    return arg


def parse_template(text: str) -> tuple[tuple[str, str | None], ...]:
    """Split a template into (literal, placeholder) pairs; `{{` and `}}` are literal braces."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TransformArgError(f"template is not valid: {exc}", ("template",)) from None
    parts: list[tuple[str, str | None]] = []
    for literal, field_name, spec, conversion in pieces:
        if field_name is not None and (spec or conversion):
            raise TransformArgError(
                "template placeholders are plain source paths like {Account.BillingCity}; no ! or :",
                ("template",),
            )
        if field_name == "":
            raise TransformArgError("template has an empty placeholder {}", ("template",))
        parts.append((literal, field_name))
    return tuple(parts)


def parse_transform(entry: Any) -> Transform:
    """One YAML transform entry -> a transform. Raises TransformArgError."""
    if isinstance(entry, str):
        name, arg, has_arg = entry, None, False
    elif isinstance(entry, dict) and len(entry) == 1:
        ((name, arg),) = entry.items()
        has_arg = True
    else:
        raise TransformArgError(
            "a transform is a name (trim) or a one-key mapping ({truncate: 256})"
        )
    if name in SIMPLE or name == "link":
        if has_arg and arg is not None:
            raise TransformArgError(f"{name} takes no arguments; write it as a plain name", (name,))
        return Link() if name == "link" else Simple(name, SIMPLE[name])
    if name not in NAMES:
        raise TransformArgError(
            f"unknown transform {name!r}; known: {', '.join(NAMES)}",
            (name,) if has_arg else (),
            at_key=True,
        )
    if not has_arg:
        raise TransformArgError(f"{name} needs arguments, e.g. {_EXAMPLES[name]}")
    if name == "truncate":
        return Truncate(_positive_int(arg, name))
    if name in ("line", "lines_from"):
        return Line(_positive_int(arg, name), rest=name == "lines_from")
    if name == "replace":
        args = _check_keys(arg, name, ("old", "new"), ("old", "new"))
        old = _string(args["old"], "replace old", (name, "old"))
        if not old:
            raise TransformArgError("replace old must not be empty", (name, "old"))
        return Replace(old, _string(args["new"], "replace new", (name, "new")))
    if name == "lookup":
        args = _check_keys(arg, name, ("map", "default"), ("map",))
        table = args["map"]
        if not isinstance(table, dict) or not table:
            raise TransformArgError(
                "lookup map must be a mapping of Salesforce value: target value", (name, "map")
            )
        pairs: list[tuple[str, str]] = []
        for key, out in table.items():
            pairs.append((key, _string(out, f"lookup value for {key!r}", (name, "map", key))))
        default = args.get("default")
        if "default" in args:
            default = _string(default, "lookup default", (name, "default"))
        return Lookup(tuple(pairs), default)
    if name == "join":
        args = _check_keys(arg, name, ("sources", "separator"), ("sources",))
        paths = args["sources"]
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths:
            raise TransformArgError(
                "join sources must be a list of source paths", (name, "sources")
            )
        checked = tuple(
            _string(p, "a join source", (name, "sources", i)) for i, p in enumerate(paths)
        )
        separator = _string(args.get("separator", " "), "join separator", (name, "separator"))
        return Join(checked, separator)
    # template
    text = _string(arg, "template", (name,))
    return Template(text, parse_template(text))


_EXAMPLES = {
    "truncate": "{truncate: 256}",
    "line": "{line: 1}",
    "lines_from": "{lines_from: 2}",
    "replace": '{replace: {old: "&", new: "and"}}',
    "lookup": "{lookup: {map: {Hot: vip}, default: standard}}",
    "join": '{join: {sources: [Account.BillingCity, Account.BillingState], separator: ", "}}',
    "template": '{template: "{Account.BillingCity}, {Account.BillingState}"}',
}
