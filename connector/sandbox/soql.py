"""The SOQL subset the Salesforce sandbox understands: a tokenizer, a recursive-descent parser
and an evaluator over in-memory records.

Supported: SELECT of fields and parent relationship paths (any depth), FROM one object, WHERE
with = != <> < <= > >= IN, NOT IN, LIKE, AND, OR, NOT and parentheses, string, number, boolean,
null, date and datetime literals, ORDER BY several paths with ASC/DESC and NULLS FIRST/LAST,
and LIMIT. What this module must never do is answer a query it does not understand: anything
else (aggregates, subqueries, GROUP BY, date functions, bind variables...) raises `SoqlError`
with MALFORMED_QUERY, so a connector bug that relies on it shows up instead of passing quietly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Protocol

# --- errors ---------------------------------------------------------------------------------

_FIELD_HINT = (
    "If you are attempting to use a custom field, be sure to append the '__c' after the custom "
    "field name. Please reference your WSDL or the describe call for the appropriate names."
)
_TYPE_HINT = (
    "If you are attempting to use a custom object, be sure to append the '__c' after the entity "
    "name. Please reference your WSDL or the describe call for the appropriate names."
)
_REL_HINT = (
    "If you are attempting to use a custom relationship, be sure to append the '__r' after the "
    "custom relationship name. Please reference your WSDL or the describe call for the "
    "appropriate names."
)


class SoqlError(Exception):
    """A query Salesforce would refuse. `error_code` is Salesforce's errorCode."""

    def __init__(self, error_code: str, text: str, pos: int | None = None) -> None:
        super().__init__(text)
        self.error_code = error_code
        self.text = text
        self.pos = pos

    def message(self, query: str) -> str:
        """The message as REST sends it: the query line, a caret, Row/Column, then the text."""
        if self.pos is None:
            return self.text
        before = query[: self.pos]
        row = before.count("\n") + 1
        line_start = before.rfind("\n") + 1
        line_end = query.find("\n", self.pos)
        line = query[line_start : line_end if line_end >= 0 else len(query)]
        column = self.pos - line_start + 1
        return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{self.text}"


def _unsupported(what: str, pos: int) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", f"{what} is not supported by the Salesforce sandbox", pos)


# --- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # IDENT STRING NUMBER DATETIME DATE OP COMMA DOT LPAREN RPAREN COLON EOF
    text: str  # as written
    pos: int
    value: Any = None

    def is_kw(self, *words: str) -> bool:
        return self.kind == "IDENT" and self.text.upper() in words


# A lexer matches a literal's shape at a position; the grammar itself is the parser below.
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})"
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?![\dT])")
_NUMBER = re.compile(r"-?\d+(\.\d+)?(?![\w.])")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "'": "'",
    '"': '"',
    "\\": "\\",
}


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
            continue
        if c == "'":
            value, end = _read_string(query, i)
            tokens.append(Token("STRING", query[i:end], i, value))
            i = end
            continue
        if c.isdigit() or (c == "-" and i + 1 < n and query[i + 1].isdigit()):
            m = _DATETIME.match(query, i)
            if m:
                tokens.append(Token("DATETIME", m.group(0), i, _parse_datetime_literal(m, i)))
                i = m.end()
                continue
            m = _DATE.match(query, i)
            if m:
                try:
                    d = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                except ValueError:
                    raise SoqlError("MALFORMED_QUERY", f"invalid date: {m.group(0)}", i) from None
                tokens.append(Token("DATE", m.group(0), i, d))
                i = m.end()
                continue
            m = _NUMBER.match(query, i)
            if not m:
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{_word_at(query, i)}'", i)
            text = m.group(0)
            tokens.append(Token("NUMBER", text, i, float(text) if m.group(1) else int(text)))
            i = m.end()
            continue
        m = _IDENT.match(query, i)
        if m:
            tokens.append(Token("IDENT", m.group(0), i))
            i = m.end()
            continue
        two = query[i : i + 2]
        if two in ("!=", "<>", "<=", ">="):
            tokens.append(Token("OP", "!=" if two == "<>" else two, i))
            i += 2
            continue
        simple = {
            "=": "OP",
            "<": "OP",
            ">": "OP",
            ",": "COMMA",
            ".": "DOT",
            "(": "LPAREN",
            ")": "RPAREN",
            ":": "COLON",
        }
        if c in simple:
            tokens.append(Token(simple[c], c, i))
            i += 1
            continue
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{c}'", i)
    tokens.append(Token("EOF", "<EOF>", n))
    return tokens


def _word_at(query: str, i: int) -> str:
    j = i
    while j < len(query) and not query[j].isspace() and query[j] not in ",()":
        j += 1
    return query[i:j] or query[i : i + 1]


def _read_string(query: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(query):
        c = query[i]
        if c == "\\":
            if i + 1 >= len(query):
                break
            nxt = query[i + 1]
            if nxt in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[nxt])
            elif nxt in "%_":
                out.append("\\" + nxt)  # kept escaped: only LIKE gives it a meaning
            else:
                raise SoqlError(
                    "MALFORMED_QUERY",
                    f"Invalid string literal: illegal escape sequence '\\{nxt}'",
                    i,
                )
            i += 2
            continue
        if c == "'":
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise SoqlError(
        "MALFORMED_QUERY", "unexpected token: '<EOF>': unterminated string literal", start
    )


def _parse_datetime_literal(m: re.Match[str], pos: int) -> datetime:
    y, mo, d, h, mi, s = (int(m.group(k)) for k in range(1, 7))
    frac = m.group(7)
    micro = int(float(frac) * 1_000_000) if frac else 0
    zone = m.group(8)
    if zone == "Z":
        tz = UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime(y, mo, d, h, mi, s, micro, tzinfo=tz).astimezone(UTC)
    except ValueError:
        raise SoqlError("MALFORMED_QUERY", f"invalid datetime: {m.group(0)}", pos) from None


# --- syntax tree ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Path:
    parts: tuple[str, ...]
    pos: int

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Literal:
    kind: str  # STRING NUMBER BOOLEAN NULL DATETIME DATE
    value: Any
    pos: int
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Comparison:
    path: Path
    op: str  # = != < <= > >= IN NOTIN LIKE
    value: Literal | tuple[Literal, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # AND OR
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Condition = Comparison | BoolOp | Not


@dataclass(frozen=True, slots=True)
class OrderItem:
    path: Path
    descending: bool
    nulls_last: bool


@dataclass(frozen=True, slots=True)
class Query:
    fields: tuple[Path, ...]
    sobject: str
    sobject_pos: int
    where: Condition | None
    order_by: tuple[OrderItem, ...]
    limit: int | None


# Words that end a clause; they cannot be used as an alias or a field name in those places.
_CLAUSE_WORDS = {
    "WHERE",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "GROUP",
    "HAVING",
    "WITH",
    "FOR",
    "USING",
    "UPDATE",
}
_UNSUPPORTED_CLAUSES = {
    "GROUP": "GROUP BY",
    "HAVING": "HAVING",
    "OFFSET": "OFFSET",
    "WITH": "WITH",
    "FOR": "FOR VIEW/REFERENCE/UPDATE",
    "USING": "USING SCOPE",
    "UPDATE": "UPDATE TRACKING/VIEWSTAT",
}


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        t = self.tokens[self.i]
        if t.kind != "EOF":
            self.i += 1
        return t

    def unexpected(self, t: Token | None = None) -> SoqlError:
        t = t or self.tok
        return SoqlError("MALFORMED_QUERY", f"unexpected token: '{t.text}'", t.pos)

    def expect_kw(self, word: str) -> Token:
        if not self.tok.is_kw(word):
            raise self.unexpected()
        return self.advance()

    def expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self.unexpected()
        return self.advance()

    # query := SELECT fields FROM object [WHERE cond] [ORDER BY items] [LIMIT n]
    def parse(self) -> Query:
        self.expect_kw("SELECT")
        fields = [self.select_item()]
        while self.tok.kind == "COMMA":
            self.advance()
            fields.append(self.select_item())
        self.expect_kw("FROM")
        obj = self.expect("IDENT")
        if self.tok.kind == "COMMA":
            raise _unsupported("Querying several objects (FROM a, b)", self.tok.pos)
        self.refuse_clause()
        if self.tok.kind == "IDENT" and not self.tok.is_kw(*_CLAUSE_WORDS):
            raise _unsupported("An object alias", self.tok.pos)
        where = None
        if self.tok.is_kw("WHERE"):
            self.advance()
            where = self.condition()
        self.refuse_clause()
        order: list[OrderItem] = []
        if self.tok.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            order.append(self.order_item())
            while self.tok.kind == "COMMA":
                self.advance()
                order.append(self.order_item())
        self.refuse_clause()
        limit = None
        if self.tok.is_kw("LIMIT"):
            self.advance()
            t = self.tok
            if t.kind != "NUMBER" or not isinstance(t.value, int) or t.value < 0:
                raise self.unexpected()
            self.advance()
            limit = t.value
        self.refuse_clause()
        if self.tok.kind != "EOF":
            raise self.unexpected()
        return Query(tuple(fields), obj.text, obj.pos, where, tuple(order), limit)

    def refuse_clause(self) -> None:
        t = self.tok
        if t.kind == "IDENT" and t.text.upper() in _UNSUPPORTED_CLAUSES:
            raise _unsupported(_UNSUPPORTED_CLAUSES[t.text.upper()], t.pos)

    def select_item(self) -> Path:
        t = self.tok
        if t.kind == "LPAREN":
            raise _unsupported("A subquery", t.pos)
        if t.is_kw("TYPEOF"):
            raise _unsupported("TYPEOF", t.pos)
        if t.kind == "IDENT" and self.peek().kind == "LPAREN":
            raise _unsupported(f"The function {t.text.upper()}()", t.pos)
        if t.is_kw("FROM"):
            raise self.unexpected()
        return self.path()

    def path(self) -> Path:
        first = self.expect("IDENT")
        parts = [first.text]
        while self.tok.kind == "DOT":
            self.advance()
            parts.append(self.expect("IDENT").text)
        if self.tok.kind == "LPAREN":
            raise _unsupported(f"The function {parts[-1].upper()}()", first.pos)
        return Path(tuple(parts), first.pos)

    # SOQL needs parentheses to mix AND and OR: `a AND b OR c` is refused by Salesforce too.
    def condition(self) -> Condition:
        first = self.unary()
        if not self.tok.is_kw("AND", "OR"):
            return first
        op = self.tok.text.upper()
        items = [first]
        while self.tok.is_kw("AND", "OR"):
            if self.tok.text.upper() != op:
                raise self.unexpected()
            self.advance()
            items.append(self.unary())
        return BoolOp(op, tuple(items))

    def unary(self) -> Condition:
        if self.tok.is_kw("NOT"):
            self.advance()
            return Not(self.unary())
        if self.tok.kind == "LPAREN":
            self.advance()
            inner = self.condition()
            self.expect("RPAREN")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        t = self.tok
        if t.kind == "IDENT" and self.peek().kind == "LPAREN":
            raise _unsupported(f"The function {t.text.upper()}()", t.pos)
        path = self.path()
        op_tok = self.tok
        if op_tok.kind == "OP":
            self.advance()
            return Comparison(path, op_tok.text, self.literal(), op_tok.pos)
        if op_tok.is_kw("LIKE"):
            self.advance()
            return Comparison(path, "LIKE", self.literal(), op_tok.pos)
        if op_tok.is_kw("IN"):
            self.advance()
            return Comparison(path, "IN", self.literal_list(), op_tok.pos)
        if op_tok.is_kw("NOT") and self.peek().is_kw("IN"):
            self.advance()
            self.advance()
            return Comparison(path, "NOTIN", self.literal_list(), op_tok.pos)
        if op_tok.is_kw("INCLUDES", "EXCLUDES"):
            raise _unsupported(f"{op_tok.text.upper()} (multi-select picklists)", op_tok.pos)
        raise self.unexpected()

    def literal_list(self) -> tuple[Literal, ...]:
        self.expect("LPAREN")
        if self.tok.is_kw("SELECT"):
            raise _unsupported("A semi-join subquery", self.tok.pos)
        values = [self.literal()]
        while self.tok.kind == "COMMA":
            self.advance()
            values.append(self.literal())
        self.expect("RPAREN")
        return tuple(values)

    def literal(self) -> Literal:
        t = self.tok
        if t.kind in ("STRING", "NUMBER", "DATETIME", "DATE"):
            self.advance()
            return Literal(t.kind, t.value, t.pos, t.text)
        if t.is_kw("TRUE", "FALSE"):
            self.advance()
            return Literal("BOOLEAN", t.text.upper() == "TRUE", t.pos, t.text)
        if t.is_kw("NULL"):
            self.advance()
            return Literal("NULL", None, t.pos, t.text)
        if t.kind == "COLON":
            raise _unsupported("A bind variable", t.pos)
        if t.kind == "IDENT":
            raise _unsupported(f"The date literal or function {t.text.upper()}", t.pos)
        raise self.unexpected()

    def order_item(self) -> OrderItem:
        path = self.path()
        descending = False
        if self.tok.is_kw("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_last = descending  # Salesforce's defaults: ASC NULLS FIRST, DESC NULLS LAST
        if self.tok.is_kw("NULLS"):
            self.advance()
            if not self.tok.is_kw("FIRST", "LAST"):
                raise self.unexpected()
            nulls_last = self.advance().text.upper() == "LAST"
        return OrderItem(path, descending, nulls_last)


def parse(query: str) -> Query:
    """The syntax tree of `query`, or SoqlError(MALFORMED_QUERY) with the position."""
    return _Parser(query).parse()


# --- the schema the evaluator needs -----------------------------------------------------------


class FieldInfo(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...


class Catalog(Protocol):
    """What the evaluator asks the org: names are matched case-insensitively."""

    def object_name(self, name: str) -> str | None: ...
    def field(self, sobject: str, name: str) -> FieldInfo | None: ...
    def relationship(self, sobject: str, name: str) -> tuple[str, str, str] | None:
        """(relationship name, foreign key field, target object) for a parent relationship."""
        ...


@dataclass(frozen=True, slots=True)
class Hop:
    relationship: str  # canonical relationship name, the key in the output
    foreign_key: str
    target: str


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    hops: tuple[Hop, ...]
    field: str  # canonical API name
    type: str


_STRINGISH = {
    "string",
    "textarea",
    "picklist",
    "multipicklist",
    "phone",
    "email",
    "url",
    "combobox",
    "encryptedstring",
}
_IDISH = {"id", "reference"}
_NUMERIC = {"double", "currency", "percent", "int", "long"}


def _resolve(catalog: Catalog, sobject: str, path: Path) -> ResolvedPath:
    hops: list[Hop] = []
    current = sobject
    for part in path.parts[:-1]:
        rel = catalog.relationship(current, part)
        if rel is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"Didn't understand relationship '{part}' in field path. {_REL_HINT}",
                path.pos,
            )
        hops.append(Hop(*rel))
        current = rel[2]
    info = catalog.field(current, path.parts[-1])
    if info is None:
        raise SoqlError(
            "INVALID_FIELD",
            f"No such column '{path.parts[-1]}' on entity '{current}'. {_FIELD_HINT}",
            path.pos,
        )
    return ResolvedPath(tuple(hops), info.name, info.type)


# --- evaluation -----------------------------------------------------------------------------

Record = Mapping[str, Any]
Lookup = Callable[[str, str], Record | None]  # (object, id) -> record or None


@dataclass
class CompiledQuery:
    """A query checked against the catalog, ready to run over records of `sobject`."""

    text: str
    sobject: str
    select: tuple[ResolvedPath, ...]
    where: Callable[[Record, Lookup], bool] | None
    order_by: tuple[tuple[ResolvedPath, bool, bool], ...]
    limit: int | None
    _paths: dict[int, ResolvedPath] = field(default_factory=dict)

    def run(self, records: Iterable[Record], lookup: Lookup) -> list[Record]:
        """The matching records, ordered and limited (not yet shaped for output)."""
        rows = [r for r in records if self.where is None or self.where(r, lookup)]
        for path, descending, nulls_last in reversed(self.order_by):
            rows.sort(key=_sort_key(path, lookup, descending, nulls_last), reverse=descending)
        if self.limit is not None:
            rows = rows[: self.limit]
        return rows

    def shape(
        self, record: Record, lookup: Lookup, url_for: Callable[[str, str], str]
    ) -> dict[str, Any]:
        """One record as REST returns it: attributes, then fields in SELECT order, parents nested."""
        out: dict[str, Any] = {
            "attributes": {"type": self.sobject, "url": url_for(self.sobject, record["Id"])}
        }
        for path in self.select:
            node: dict[str, Any] = out
            rec: Record | None = record
            for hop in path.hops:
                assert rec is not None
                if hop.relationship not in node:
                    parent_id = rec.get(hop.foreign_key)
                    parent = lookup(hop.target, parent_id) if parent_id else None
                    node[hop.relationship] = (
                        None
                        if parent is None
                        else {
                            "attributes": {
                                "type": hop.target,
                                "url": url_for(hop.target, parent["Id"]),
                            }
                        }
                    )
                if node[hop.relationship] is None:
                    rec = None
                    break
                node = node[hop.relationship]
                rec = lookup(hop.target, rec[hop.foreign_key])
            if rec is not None:
                node[path.field] = rec.get(path.field)
        return out


def compile_query(query: str, catalog: Catalog) -> CompiledQuery:
    """Parse and check `query`; SoqlError says what Salesforce would answer."""
    tree = parse(query)
    sobject = catalog.object_name(tree.sobject)
    if sobject is None:
        raise SoqlError(
            "INVALID_TYPE",
            f"sObject type '{tree.sobject}' is not supported. {_TYPE_HINT}",
            tree.sobject_pos,
        )
    select: list[ResolvedPath] = []
    seen: set[str] = set()
    for p in tree.fields:
        resolved = _resolve(catalog, sobject, p)
        key = ".".join([h.relationship for h in resolved.hops] + [resolved.field]).lower()
        if key in seen:
            raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {p.text}", p.pos)
        seen.add(key)
        select.append(resolved)
    where = _compile_condition(tree.where, catalog, sobject) if tree.where is not None else None
    order = tuple(
        (_resolve(catalog, sobject, o.path), o.descending, o.nulls_last) for o in tree.order_by
    )
    return CompiledQuery(query, sobject, tuple(select), where, order, tree.limit)


def value_of(record: Record, path: ResolvedPath, lookup: Lookup) -> Any:
    rec: Record | None = record
    for hop in path.hops:
        assert rec is not None
        parent_id = rec.get(hop.foreign_key)
        rec = lookup(hop.target, parent_id) if parent_id else None
        if rec is None:
            return None
    return rec.get(path.field) if rec is not None else None


def _compile_condition(
    cond: Condition, catalog: Catalog, sobject: str
) -> Callable[[Record, Lookup], bool]:
    if isinstance(cond, BoolOp):
        parts = [_compile_condition(c, catalog, sobject) for c in cond.items]
        if cond.op == "AND":
            return lambda r, lk: all(p(r, lk) for p in parts)
        return lambda r, lk: any(p(r, lk) for p in parts)
    if isinstance(cond, Not):
        inner = _compile_condition(cond.item, catalog, sobject)
        return lambda r, lk: not inner(r, lk)
    return _compile_comparison(cond, catalog, sobject)


def _compile_comparison(
    cmp: Comparison, catalog: Catalog, sobject: str
) -> Callable[[Record, Lookup], bool]:
    path = _resolve(catalog, sobject, cmp.path)
    literals = cmp.value if isinstance(cmp.value, tuple) else (cmp.value,)
    for lit in literals:
        _check_literal(path, lit, cmp)
    op = cmp.op
    if op == "LIKE":
        lit = literals[0]
        if lit.kind != "STRING":
            raise SoqlError("MALFORMED_QUERY", "LIKE needs a string literal", lit.pos)
        if path.type not in _STRINGISH and path.type not in _IDISH:
            raise SoqlError(
                "INVALID_FIELD", f"invalid operator on {path.type} field: LIKE", cmp.pos
            )
        pattern = _like_pattern(lit.value)
        return lambda r, lk: (
            (v := value_of(r, path, lk)) is not None and pattern.fullmatch(str(v)) is not None
        )
    if op in ("IN", "NOTIN"):
        keys = {_key(path.type, lit.value) for lit in literals}
        if op == "IN":
            return lambda r, lk: _key(path.type, value_of(r, path, lk)) in keys
        return lambda r, lk: _key(path.type, value_of(r, path, lk)) not in keys
    lit = literals[0]
    if lit.kind == "NULL":
        if op == "=":
            return lambda r, lk: value_of(r, path, lk) is None
        if op == "!=":
            return lambda r, lk: value_of(r, path, lk) is not None
        raise SoqlError(
            "MALFORMED_QUERY", f"null can only be compared with = or !=, not {op}", lit.pos
        )
    want = _key(path.type, lit.value)
    if op in ("<", "<=", ">", ">=") and path.type == "boolean":
        raise SoqlError("INVALID_FIELD", f"invalid operator on boolean field: {op}", cmp.pos)
    compare = _OPERATORS[op]

    # SOQL is not SQL here: `Field != 'x'` also matches records where Field is null.
    def test(r: Record, lk: Lookup) -> bool:
        v = _key(path.type, value_of(r, path, lk))
        if v is None:
            return op == "!="
        return compare(v, want)

    return test


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


_LITERAL_FOR_TYPE = {
    **dict.fromkeys(_STRINGISH | _IDISH, "STRING"),
    **dict.fromkeys(_NUMERIC, "NUMBER"),
    "boolean": "BOOLEAN",
    "datetime": "DATETIME",
    "date": "DATE",
}


def _is_id(value: str) -> bool:
    return len(value) in (15, 18) and value.isascii() and value.isalnum()


def _check_literal(path: ResolvedPath, lit: Literal, cmp: Comparison) -> None:
    if lit.kind == "NULL":
        return
    expected = _LITERAL_FOR_TYPE.get(path.type)
    if lit.kind == "STRING" and path.type in _IDISH and lit.value and not _is_id(lit.value):
        # Salesforce checks id literals before running anything.
        raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {lit.value}", lit.pos)
    if expected is None or lit.kind == expected:
        return
    names = {
        "STRING": "string",
        "NUMBER": "number",
        "BOOLEAN": "boolean",
        "DATETIME": "dateTime",
        "DATE": "date",
    }
    quoted = (
        "and should be enclosed in quotes"
        if expected == "STRING"
        else "and should not be enclosed in quotes"
    )
    raise SoqlError(
        "INVALID_FIELD",
        f"value of filter criterion for field '{path.field}' must be of type {names[expected]} {quoted}",
        lit.pos,
    )


def _key(ftype: str, value: Any) -> Any:
    """A value made comparable the way SOQL compares it (strings case-insensitively)."""
    if value is None:
        return None
    if ftype in _IDISH:
        return str(value)[:15]  # a 15-character id equals its 18-character form
    if ftype in _STRINGISH:
        return str(value).casefold()
    if ftype in _NUMERIC:
        return float(value)
    if ftype == "boolean":
        return bool(value)
    if ftype == "datetime":
        return value if isinstance(value, datetime) else parse_datetime(str(value))
    if ftype == "date":
        return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    return value


def parse_datetime(text: str) -> datetime:
    """Read '2026-01-05T03:41:05.000+0000' (REST's form) or any ISO 8601 datetime, as UTC."""
    s = text.strip().replace("Z", "+00:00")
    if len(s) >= 5 and s[-5] in "+-" and s[-3] != ":":
        s = s[:-2] + ":" + s[-2:]
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _like_pattern(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _sort_key(
    path: ResolvedPath, lookup: Lookup, descending: bool, nulls_last: bool
) -> Callable[[Record], tuple[int, Any]]:
    # The sort is reversed for DESC, so the null rank is flipped to keep NULLS FIRST/LAST.
    null_rank = 1 if nulls_last != descending else -1

    def key(r: Record) -> tuple[int, Any]:
        v = _key(path.type, value_of(r, path, lookup))
        return (null_rank, 0) if v is None else (0, v)

    return key
