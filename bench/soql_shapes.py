"""The SOQL the connector sent to the sandbox org, and whether any filter ORs fields of
different objects (issue 15: Salesforce uses an index for an OR only when every branch filters
the driving object; otherwise a large org's Order table is scanned on every run).

The benchmark wraps the sandbox's `compile_query` (REST queries and Bulk API 2.0 query jobs both
go through it) in its own process, so every query is seen as the server received it.
Literals are replaced by `?` so one query shape is listed once however many pages or runs used it.

The check is textual, not a SOQL parser: at each level of parentheses whose own text has an
OR, it collects the fields compared at that level and below, and flags the query when they
belong to more than one object (`SystemModstamp` is Order's own, `Account.SystemModstamp` its
account's). A false positive is possible for an OR of one object's fields ANDed inside another
object's filter at the same level; the flagged text is saved with the figures to be read.
What it must never do: change a query or its answer.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_NUMBER_OR_DATE = re.compile(r"(?<![\w.])[-+]?\d[\w:.+-]*")
_COMPARED = re.compile(
    r"([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)\s*(?:=|!=|<>|<=|>=|<|>|\bIN\b|\bNOT\s+IN\b|\bLIKE\b|\bINCLUDES\b|\bEXCLUDES\b)",
    re.IGNORECASE,
)
_OR = re.compile(r"\bOR\b", re.IGNORECASE)
_KEYWORDS = {"and", "or", "not", "in", "like", "null", "true", "false"}


def shape(soql: str) -> str:
    """The query with its literals replaced by `?` and its spaces collapsed."""
    text = _STRING.sub("?", soql)
    text = _NUMBER_OR_DATE.sub("?", text)
    return " ".join(text.split())


def _where(soql: str) -> str:
    m = re.search(
        r"\bWHERE\b(.*?)(?:\bORDER\s+BY\b|\bGROUP\s+BY\b|\bLIMIT\b|\bOFFSET\b|$)",
        soql,
        re.IGNORECASE | re.DOTALL,
    )
    return m.group(1) if m else ""


def _owner(field: str) -> str:
    """The object a compared field belongs to, as a path from the driving object ('' = itself)."""
    return field.rsplit(".", 1)[0].casefold() if "." in field else ""


def _fields(text: str) -> set[str]:
    return {m.group(1) for m in _COMPARED.finditer(text) if m.group(1).casefold() not in _KEYWORDS}


def _groups(text: str) -> list[tuple[str, str]]:
    """(own text, whole text) of the top level and of every parenthesised group."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, list[str]]] = [(0, [])]
    for i, ch in enumerate(text):
        if ch == "(":
            stack.append((i + 1, []))
        elif ch == ")" and len(stack) > 1:
            begin, own = stack.pop()
            whole = text[begin:i]
            out.append(("".join(own), whole))
            stack[-1][1].append(" () ")
        else:
            stack[-1][1].append(ch)
    out.append(("".join(stack[0][1]), text))
    return out


def ors_across_objects(soql: str) -> bool:
    """True when some OR in the WHERE clause joins conditions on fields of different objects."""
    where = _STRING.sub("?", _where(soql))
    for own, whole in _groups(where):
        if _OR.search(own) and len({_owner(f) for f in _fields(whole)}) > 1:
            return True
    return False


class QueryLog:
    """Counts query shapes while installed; thread-safe (the sandbox serves from threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.shapes: Counter[str] = Counter()
        self._installed: tuple[Any, Any] | None = None

    def install(self) -> None:
        import connector.sandbox.salesforce as sf

        original = sf.compile_query

        def compile_and_log(soql: str, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.shapes[shape(soql)] += 1
            return original(soql, *args, **kwargs)

        sf.compile_query = compile_and_log
        self._installed = (sf, original)

    def uninstall(self) -> None:
        if self._installed:
            module, original = self._installed
            module.compile_query = original
            self._installed = None

    def take(self) -> Counter[str]:
        """The shapes seen since the last take, and a fresh count."""
        with self._lock:
            seen, self.shapes = self.shapes, Counter()
        return seen


def summary(seen: Counter[str]) -> dict[str, Any]:
    flagged = sorted(q for q in seen if ors_across_objects(q))
    return {
        "queries": sum(seen.values()),
        "shapes": len(seen),
        "shapes_with_or_across_objects": flagged,
        "no_or_across_objects": not flagged,
    }
