"""Which billing account an activated order is billed in: ordered rules, first match wins.

Pure: the rules come from config (`routing:`), the values from the order record the Source
read (the fields rules test are added to its query), and `mappings check` asks Salesforce's
describe through a callback. Nothing here talks to Salesforce or a billing system.

```yaml
routing:
  rules:
    # Stripe's own connector: the order looks up a record that holds the acct_ id
    - field: Order.Stripe_Account__r.Stripe_ID__c
      map: {acct_1Europe: eu, acct_1UK: uk}
    - {field: Order.CurrencyIsoCode, in: [USD, CAD], account: us}
    - {field: Account.BillingCountry, equals: Germany, account: eu}
  default: us          # optional: orders no rule matches; without it they are refused
```

Values compare as Salesforce compares text in SOQL filters: trimmed and case-insensitive. An
empty field never matches. Without a `routing:` section every order goes to every billing
account (the behaviour of one account, kept for configs written before routing existed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["error", "warning"]
# config key path -> where the problem is (a tuple the YAML positions are keyed by)
KeyPath = tuple[str | int, ...]
Describe = Callable[[str], dict[str, Any]]


def _paths() -> Any:
    # Imported when first used: config.py holds these models, and the mapping compiler imports
    # the billing registry, whose adapters import config.py.
    from connector.mapping import compile as paths

    return paths


def _fold(value: str) -> str:
    return value.strip().casefold()


class RoutingRule(BaseModel):
    """One rule: a field of the order (or its account) and the values that send it somewhere."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(min_length=3, max_length=400)
    equals: str | None = None
    in_: tuple[str, ...] | None = Field(default=None, alias="in")
    # value -> billing account: one rule for Stripe's connector set-up (a lookup to a record
    # holding the acct_ id), or any field whose values name the account
    map: dict[str, str] | None = None
    account: str | None = None

    @field_validator("field")
    @classmethod
    def _readable_path(cls, v: str) -> str:
        why = _paths().check_source_path(v)
        if why:
            raise ValueError(why.replace("source ", "field ", 1))
        return v

    @model_validator(mode="after")
    def _one_test(self) -> RoutingRule:
        tests = [k for k in ("equals", "in", "map") if self.test_value(k) is not None]
        if len(tests) != 1:
            raise ValueError(
                "a routing rule tests its field with exactly one of equals, in or map"
                + (f" (this one has {', '.join(tests)})" if tests else "")
            )
        if self.map is None and not self.account:
            raise ValueError("a rule with equals or in names the billing account: account: NAME")
        if self.map is not None and self.account:
            raise ValueError("a rule with map takes its accounts from the map; remove account")
        return self

    def test_value(self, key: str) -> Any:
        return {"equals": self.equals, "in": self.in_, "map": self.map}[key]

    @property
    def values(self) -> frozenset[str]:
        """The field values (folded) this rule matches."""
        if self.equals is not None:
            return frozenset({_fold(self.equals)} - {""})
        if self.in_ is not None:
            return frozenset(_fold(v) for v in self.in_) - {""}
        return frozenset(_fold(k) for k in (self.map or {})) - {""}

    def account_for(self, value: str) -> str | None:
        """The billing account an order with this field value goes to, or None (no match)."""
        folded = _fold(value)
        if not folded or folded not in self.values:
            return None
        if self.map is not None:
            return next(acct for key, acct in self.map.items() if _fold(key) == folded)
        return self.account

    def accounts(self) -> list[tuple[str, KeyPath]]:
        """Every billing account this rule names, with where (relative to the rule)."""
        if self.map is not None:
            return [(acct, ("map", key)) for key, acct in self.map.items()]
        return [(self.account or "", ("account",))]

    def describe_test(self) -> str:
        if self.equals is not None:
            return f"{self.field} = {self.equals!r}"
        if self.in_ is not None:
            return f"{self.field} in {list(self.in_)!r}"
        return f"{self.field} in the map's values"


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[RoutingRule, ...] = ()
    default: str | None = None

    def fields(self) -> list[str]:
        """Every field the rules read, as written (Order.X / Account.X), once each."""
        return list(dict.fromkeys(r.field for r in self.rules))

    def soql_fields(self) -> list[str]:
        """The same, as SOQL paths relative to Order, for the Source's query."""
        unique: dict[str, str] = {}
        for f in self.fields():
            path = _paths().soql_path(f)
            unique.setdefault(path.casefold(), path)
        return list(unique.values())


@dataclass(frozen=True, slots=True)
class Route:
    """Where one order goes: a billing account, or None with the reason it goes nowhere."""

    account: str | None
    reason: str
    rule: int | None = None  # 0-based index of the rule that matched; None: the default / none


def route(record: Mapping[str, Any], routing: RoutingConfig) -> Route:
    """The billing account of the order `record` (a simple-salesforce Order row)."""
    seen: dict[str, str] = {}
    for i, rule in enumerate(routing.rules):
        value = _paths().read_source(record, rule.field)
        seen.setdefault(rule.field, value)
        account = rule.account_for(value)
        if account is not None:
            return Route(account, f"rule {i + 1}: {rule.field} = {value.strip()!r}", i)
    if routing.default:
        return Route(routing.default, "no rule matched: the default account")
    read = ", ".join(f"{f} = {v.strip()!r}" for f, v in seen.items()) or "no rules"
    return Route(
        None,
        f"no routing rule matches this order ({read}) and routing has no default account; "
        "add a rule for it or set routing.default",
    )


# --- checking --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutingProblem:
    where: KeyPath  # under the config file's root, e.g. ("routing", "rules", 0, "account")
    message: str
    severity: Severity = "error"


def check_routing(
    routing: RoutingConfig | None,
    accounts: Sequence[str],
    *,
    describe: Describe | None = None,
) -> list[RoutingProblem]:
    """Unknown accounts, rules that can never match, and (with `describe`) fields the
    integration user cannot read or values a restricted picklist cannot hold."""
    out: list[RoutingProblem] = []
    if routing is None:
        return out
    known = set(accounts)
    names = ", ".join(accounts)
    for i, rule in enumerate(routing.rules):
        at: KeyPath = ("routing", "rules", i)
        for account, where in rule.accounts():
            if account not in known:
                out.append(
                    RoutingProblem(
                        (*at, *where),
                        f"routing rule {i + 1} names billing account {account!r}, which is not "
                        f"in billing.accounts ({names})",
                    )
                )
        if not rule.values:
            out.append(
                RoutingProblem(
                    at,
                    f"routing rule {i + 1} ({rule.describe_test()}) lists no value: it can never match",
                )
            )
            continue
        taken = _values_taken_before(routing.rules[:i], rule.field)
        if rule.values <= taken:
            out.append(
                RoutingProblem(
                    at,
                    f"routing rule {i + 1} ({rule.describe_test()}) can never match: earlier "
                    f"rules on {rule.field} already take every value it lists",
                )
            )
    if routing.default is not None and routing.default not in known:
        out.append(
            RoutingProblem(
                ("routing", "default"),
                f"routing.default names billing account {routing.default!r}, which is not in "
                f"billing.accounts ({names})",
            )
        )
    if describe is not None:
        out.extend(_check_fields(routing, describe))
    return out


def _values_taken_before(rules: Iterable[RoutingRule], field: str) -> frozenset[str]:
    soql_path = _paths().soql_path
    folded = soql_path(field).casefold()
    taken: set[str] = set()
    for rule in rules:
        if soql_path(rule.field).casefold() == folded:
            taken |= rule.values
    return frozenset(taken)


def _check_fields(routing: RoutingConfig, describe: Describe) -> list[RoutingProblem]:
    out: list[RoutingProblem] = []
    cache: dict[str, dict[str, dict[str, Any]] | str] = {}

    def fields_of(sobject: str) -> dict[str, dict[str, Any]] | str:
        if sobject not in cache:
            try:
                result = describe(sobject)
                cache[sobject] = {
                    str(f.get("name", "")).casefold(): f for f in result.get("fields", [])
                }
            # Any failure of the callback is a problem to report, not a crash.
            except Exception as exc:
                cache[sobject] = f"cannot describe {sobject}: {exc}"
        return cache[sobject]

    for i, rule in enumerate(routing.rules):
        at: KeyPath = ("routing", "rules", i, "field")
        info, why = _resolve(rule.field, fields_of)
        if info is None:
            out.append(RoutingProblem(at, f"routing rule {i + 1}: {why}"))
            continue
        if info.get("calculated"):
            out.append(
                RoutingProblem(
                    at,
                    f"routing rule {i + 1}: {rule.field} is a formula field; a change in its "
                    "result does not move SystemModstamp, so a re-routed order is seen only when "
                    "it changes otherwise",
                    "warning",
                )
            )
        picklist = {
            _fold(str(v.get("value", "")))
            for v in info.get("picklistValues") or []
            if v.get("active", True)
        }
        if info.get("type") == "picklist" and picklist and info.get("restrictedPicklist"):
            impossible = sorted(rule.values - picklist)
            if impossible and impossible == sorted(rule.values):
                out.append(
                    RoutingProblem(
                        ("routing", "rules", i),
                        f"routing rule {i + 1} can never match: {rule.field} is a restricted "
                        f"picklist without {', '.join(repr(v) for v in impossible)}",
                    )
                )
            elif impossible:
                out.append(
                    RoutingProblem(
                        ("routing", "rules", i),
                        f"routing rule {i + 1}: {rule.field} is a restricted picklist without "
                        f"{', '.join(repr(v) for v in impossible)}; those values never match",
                        "warning",
                    )
                )
    return out


def _resolve(
    path: str, fields_of: Callable[[str], dict[str, dict[str, Any]] | str]
) -> tuple[dict[str, Any] | None, str]:
    """The describe entry of `path` read from Order, or None and why it cannot be read."""
    segments = _paths().soql_path(path).split(".")
    sobject = "Order"
    for segment in segments[:-1]:
        fields = fields_of(sobject)
        if isinstance(fields, str):
            return None, fields
        rel = next(
            (
                f
                for f in fields.values()
                if str(f.get("relationshipName") or "").casefold() == segment.casefold()
            ),
            None,
        )
        if rel is None or not rel.get("referenceTo"):
            return None, f"{path}: {sobject} has no relationship {segment!r}"
        sobject = str(rel["referenceTo"][0])
    fields = fields_of(sobject)
    if isinstance(fields, str):
        return None, fields
    info = fields.get(segments[-1].casefold())
    if info is None:
        return None, (
            f"{path}: {sobject} has no field {segments[-1]!r}, or the integration user cannot "
            "read it"
        )
    return info, ""
