"""Local Stripe accounts: the customer API as stripe-python 16 speaks it, on 127.0.0.1.

`StripeSandbox` answers `/v1/customers` (create, retrieve, update, list, search, delete) the
way Stripe does: form bodies with `address[line1]` and `metadata[key]`, parameters checked
against the vendored OpenAPI description, empty strings that unset, metadata merged key by
key, Stripe's error shapes, idempotency keys replayed or refused, `Request-Id` on every
answer, and search that can lag behind writes. It holds one account or several (account,
organization and Connect keys, sharing groups: `stripe_accounts`) and can enforce Stripe's
rate limits (`stripe_limits`). It keeps everything in memory and must never talk to the real
Stripe: it is a server, not a client, and it binds loopback only. It imports no product code of
the connector it checks: it loads Stripe's description itself (`stripe_openapi`) and reads it
with the neutral `connector.openapi`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import operator
import re
import secrets
import string
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from connector.openapi import ParamError, ParamProblem
from connector.sandbox.http import Clock, Fault, Request, Response, SandboxServer
from connector.sandbox.stripe_accounts import DEFAULT_ACCOUNT, Access, Directory, Refusal
from connector.sandbox.stripe_limits import RateLimits, StripeLimiter
from connector.sandbox.stripe_openapi import STRIPE

CUSTOMERS = "/v1/customers"
CUSTOMER = "/v1/customers/{customer}"
SEARCH = "/v1/customers/search"

#: answered when a request carries no Stripe-Version (the description's version)
DEFAULT_API_VERSION = "2020-08-27"
IDEMPOTENCY_KEY_MAX = 255  # Stripe: "Idempotency keys are up to 255 characters long"
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
SEARCH_MAX_CLAUSES = 10

_ALNUM = string.ascii_letters + string.digits
_DOCS = "https://stripe.com/docs/error-codes/"


def _random(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_customer_id() -> str:
    return "cus_" + _random(14)


def new_request_id() -> str:
    return "req_" + _random(14)


# --- errors in Stripe's shape --------------------------------------------------------------


class _NotStored(Response):
    """An answer given before the endpoint ran (validation): no idempotency record is kept."""


def stripe_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    stored: bool = True,
) -> Response:
    err: dict[str, Any] = {}
    if code:
        err["code"] = code
        err["doc_url"] = _DOCS + code.replace("_", "-")
    err["message"] = message
    if param is not None:
        err["param"] = param
    err["type"] = type
    cls = Response if stored else _NotStored
    return cls.json({"error": err}, status, dict(headers or {}))


def _problem(problem: ParamProblem) -> Response:
    return stripe_error(400, problem.message, code=problem.code, param=problem.param or None, stored=False)


def _no_such_customer(cid: str, param: str = "id", status: int = 404) -> Response:
    return stripe_error(status, f"No such customer: '{cid}'", code="resource_missing", param=param)


RATE_LIMIT_MESSAGE = (
    "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."
)
LOCK_TIMEOUT_MESSAGE = (
    "This object cannot be accessed right now because another API request or Stripe process is "
    "currently accessing it. If you see this error intermittently, retry the request. If you see "
    "this error frequently and are making multiple concurrent requests to a single object, make "
    "your requests serially or at a lower rate."
)


def rate_limit_body() -> dict[str, Any]:
    return {"error": {"code": "rate_limit", "doc_url": _DOCS + "rate-limit", "message": RATE_LIMIT_MESSAGE, "type": "invalid_request_error"}}


def lock_timeout_body() -> dict[str, Any]:
    return {"error": {"code": "lock_timeout", "doc_url": _DOCS + "lock-timeout", "message": LOCK_TIMEOUT_MESSAGE, "type": "invalid_request_error"}}


def api_error_body(message: str = "An unknown error occurred") -> dict[str, Any]:
    return {"error": {"message": message, "type": "api_error"}}


# --- form bodies -----------------------------------------------------------------------------

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest `a[b][c]=v`, `a[0]=v` and `a[]=v` pairs the way Stripe reads a form body.

    Index keys stay strings here ("0", "1"); `coerce_params` turns them into a list where the
    description says array (and leaves them as keys of `metadata`, where it does not).
    """
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        m = _KEY.fullmatch(raw_key)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))] if m else [raw_key]
        append = len(parts) > 1 and parts[-1] == ""
        if append:
            parts = parts[:-1]
        if "" in parts[1:]:
            raise ParamError(ParamProblem(_param(parts), f"Invalid array: {raw_key}"))
        node = root
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, list):
                child = node[part] = {str(j): v for j, v in enumerate(child)}
            elif not isinstance(child, dict):
                raise ParamError(ParamProblem(_param(parts[: i + 1]), f"Invalid hash: {_param(parts[: i + 1])}"))
            node = child
        last = parts[-1]
        existing = node.get(last)
        if append:
            if existing is None:
                node[last] = [value]
            elif isinstance(existing, list):
                existing.append(value)
            elif isinstance(existing, dict) and all(k.isdigit() for k in existing):
                node[last] = [*(existing[k] for k in sorted(existing, key=int)), value]
            else:
                raise ParamError(ParamProblem(_param(parts), f"Invalid array: {_param(parts)}"))
        elif isinstance(existing, dict | list):
            raise ParamError(ParamProblem(_param(parts), f"Invalid hash: {_param(parts)}"))
        else:
            node[last] = value
    return root


def _param(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def _query_pairs(query: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, values in query.items() for v in values]


# --- search --------------------------------------------------------------------------------


class SearchQueryError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _Clause:
    negate: bool
    field: str  # "created", "email", "name", "phone", "metadata"
    key: str | None  # metadata key
    op: str  # ":", "~", ">", "<", ">=", "<="
    value: str | int | None  # None: the literal null


_SEARCH_FIELDS = {"created", "email", "metadata", "name", "phone"}
_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?
        (?:metadata\[(?P<mq>['"])(?P<mkey>(?:\\.|(?!(?P=mq)).)*)(?P=mq)\]|(?P<field>[A-Za-z_][A-Za-z0-9_.]*))
        \s*(?P<op>>=|<=|:|~|>|<)\s*
        (?:(?P<vq>['"])(?P<sval>(?:\\.|(?!(?P=vq)).)*)(?P=vq)|(?P<num>-?\d+)(?![\w'"])|(?P<null>null)(?![\w'"]))""",
    re.VERBOSE,
)
_JOIN = re.compile(r"\s+(?:(?P<op>AND|OR)\s+)?", re.IGNORECASE)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_search_query(query: str) -> tuple[str, list[_Clause]]:
    """Stripe's search query language for customers: clauses joined by AND, OR or spaces.

    Returns ("AND" | "OR", clauses). Stripe refuses a mix of AND and OR and has no
    parentheses; so does this.
    """
    pos, clauses, joins = 0, [], set()
    text = query.strip()
    if not text:
        raise SearchQueryError("The query is empty.")
    while True:
        m = _CLAUSE.match(text, pos)
        if not m:
            raise SearchQueryError(f"Could not parse the query at character {pos}: {text[pos:pos + 20]!r}.")
        name = "metadata" if m.group("mq") else m.group("field")
        if name not in _SEARCH_FIELDS:
            raise SearchQueryError(
                f"Field '{name}' is an unsupported search field for resource customers. See "
                "https://stripe.com/docs/search#query-fields-for-customers for a list of supported fields."
            )
        op = m.group("op")
        value: str | int | None
        if m.group("null"):
            value = None
        elif m.group("num") is not None:
            value = int(m.group("num"))
        else:
            value = _unescape(m.group("sval"))
        if name == "created":
            if not isinstance(value, int):
                raise SearchQueryError("The field 'created' takes a number (a Unix timestamp).")
            if op == "~":
                raise SearchQueryError("The substring operator '~' is not supported on 'created'.")
        else:
            if op in (">", "<", ">=", "<="):
                raise SearchQueryError(f"Comparison operators are only supported on numeric fields, not '{name}'.")
            if isinstance(value, int):
                raise SearchQueryError(f"The field '{name}' takes a quoted string value.")
            if op == "~" and (name == "metadata" or value is None or len(value) < 3):
                raise SearchQueryError("The substring operator '~' needs a string of at least 3 characters on email, name or phone.")
        clauses.append(_Clause(bool(m.group("neg")), name, _unescape(m.group("mkey")) if m.group("mq") else None, op, value))
        pos = m.end()
        if pos >= len(text):
            break
        j = _JOIN.match(text, pos)
        if not j or j.end() == pos:
            raise SearchQueryError(f"Could not parse the query at character {pos}: {text[pos:pos + 20]!r}.")
        joins.add((j.group("op") or "AND").upper())
        pos = j.end()
    if len(joins) > 1:
        raise SearchQueryError("You cannot combine AND and OR in the same search query.")
    if len(clauses) > SEARCH_MAX_CLAUSES:
        raise SearchQueryError(f"A search query can have at most {SEARCH_MAX_CLAUSES} clauses.")
    return (joins.pop() if joins else "AND"), clauses


_COMPARE: dict[str, Callable[[int, int], bool]] = {
    ":": operator.eq, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}


def _clause_matches(c: _Clause, obj: Mapping[str, Any]) -> bool:
    if c.field == "created":
        assert isinstance(c.value, int)
        ok = _COMPARE[c.op](int(obj["created"]), c.value)
    elif c.field == "metadata":
        have = (obj.get("metadata") or {}).get(c.key)
        ok = have is None if c.value is None else have is not None and have.lower() == str(c.value).lower()
    else:
        have = obj.get(c.field)
        if c.value is None:
            ok = have is None
        elif have is None:
            ok = False
        elif c.op == "~":
            ok = str(c.value).lower() in have.lower()
        else:  # exact match is case-insensitive in Stripe's search
            ok = have.lower() == str(c.value).lower()
    return ok != c.negate


# --- the account -----------------------------------------------------------------------------


# --- sharing (Stripe Organizations) ---------------------------------------------------------
#
# In a sharing group every customer of every member account is a customer of the others, by
# the same `cus_` id. Which fields are shared depends on the API version of the request:
# `2026-09-30.endive` added metadata, description, shipping, preferred_locales, tax_exempt,
# business_name, invoice_prefix and tax_ids (Stripe changelog, "Adds additional shared fields
# to customer sharing"). Before it, the sandbox shares the contact fields name, email, phone
# and address: Stripe describes sharing as avoiding "recollecting ... contact information",
# but the sandbox could not find the list for earlier versions, so this base set is its
# assumption. Every other field (balance, currency, invoice_settings, ...) is per account.
#
# How the sandbox keeps it: each account that wrote the customer has its own copy of every
# field; a write of a field shared at the write's version also lands in the common copy. A read
# at version V takes each field shared at V from whichever was written last (the common copy or
# the reader's own), and falls back to the creating account's value for fields the reader never
# wrote. So a reader pinned to an older version sees its own per-account values of the fields
# that version does not share. Deleting a shared customer deletes it in every account of the
# group (an assumption: the connector never deletes).

SHARED_ALWAYS: frozenset[str] = frozenset({"name", "email", "phone", "address"})
ENDIVE_SHARING_VERSION = "2026-09-30"
SHARED_FROM_ENDIVE: frozenset[str] = frozenset({
    "metadata", "description", "shipping", "preferred_locales", "tax_exempt", "business_name",
    "invoice_prefix", "tax_ids",
})
_WRITABLE_FIELDS = frozenset({
    "name", "email", "phone", "description", "address", "shipping", "metadata", "preferred_locales",
    "tax_exempt", "balance", "next_invoice_sequence", "invoice_prefix", "invoice_settings",
})


def shared_fields(version: str | None) -> frozenset[str]:
    """Customer fields a sharing group shares at `version` (None: the newest the sandbox knows)."""
    if version is None or version[:10] >= ENDIVE_SHARING_VERSION:
        return SHARED_ALWAYS | SHARED_FROM_ENDIVE
    return SHARED_ALWAYS


@dataclass
class _Customer:
    seq: int
    id: str
    home: str  # the account that created it
    own: dict[str, dict[str, Any]]  # account -> that account's copy of the object
    stamps: dict[str, dict[str, int]]  # account -> field -> number of the write that set it
    common: dict[str, tuple[int, Any]]  # field -> (write number, value) written while shared
    deleted: bool = False
    # what search sees: (visible from, frozen copy or None once deleted), oldest first; only kept
    # while search lags behind writes
    index: list[tuple[float, _Customer | None]] = field(default_factory=list)

    @property
    def created(self) -> int:
        return int(self.own[self.home]["created"])

    def frozen(self) -> _Customer:
        return _Customer(
            self.seq, self.id, self.home, copy.deepcopy(self.own), copy.deepcopy(self.stamps),
            copy.deepcopy(self.common), self.deleted,
        )


@dataclass
class _Stored:
    endpoint: str
    fingerprint: str
    status: int
    body: bytes | None
    request_id: str
    stamp: float


# Parameters that name other Stripe objects this sandbox does not hold: any value is refused
# as Stripe refuses an id it cannot find.
_REFERENCES = {
    "coupon": "coupon",
    "promotion_code": "promotion code",
    "payment_method": "PaymentMethod",
    "source": "source",
    "default_source": "source",
    "test_clock": "test clock",
    "bank_account": "token",
    "card": "token",
    "default_alipay_account": "source",
    "default_bank_account": "source",
    "default_card": "source",
}

_INVOICE_PREFIX = re.compile(r"[A-Z0-9]{3,12}")
_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")


class StripeSandbox(SandboxServer):
    """The customer part of Stripe, in memory: one test-mode account, or several.

    Out of the box it is one account (`DEFAULT_ACCOUNT`) reached by any `sk_test_`/`rk_test_`
    key, or exactly `api_keys` when given: the single-account sandbox the demo and most tests
    use. `load()`, the constructor's `data` or the control API add accounts with their own
    keys, organizations with `sk_org_` keys, Connect platforms and sharing groups (see
    `stripe_accounts` for who reaches what, and the notes above `shared_fields` for what a
    group shares). Customers, idempotency keys and search live per account.

    Rate limits: off unless `rate_limits` is given (or `set_rate_limits`); then Stripe's two
    levels, per credential (see `stripe_limits`). `clock` drives the limiter and the search
    lag, so tests move time by hand.

    Control API besides the base's: POST /_sandbox/load, POST /_sandbox/reset, GET
    /_sandbox/customers (?include_deleted=true&account=acct_...&version=...), POST
    /_sandbox/customers/{id}/delete and /edit (?account=), POST /_sandbox/idempotency/expire
    ({"older_than": s}), GET and POST /_sandbox/accounts, POST /_sandbox/organizations, POST
    /_sandbox/sharing_groups ({"accounts": [...]}), POST /_sandbox/rate_limits ({"burst",
    "global", "endpoint", "endpoints"} or {"enabled": false}); POST /_sandbox/faults also
    takes {"kind": "lock_timeout" | "rate_limit" | "api_error", "count", "method", "path"}.
    An injected fault without a body answers in Stripe's error shape.
    """

    kind = "stripe"

    def __init__(
        self,
        *,
        port: int = 0,
        api_keys: Collection[str] | None = None,
        search_delay: float = 0.0,
        idempotency_window: float | None = 24 * 3600.0,
        data: Mapping[str, Any] | None = None,
        rate_limits: RateLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(port)
        self.directory = Directory()
        self.directory.default_keys = frozenset(api_keys) if api_keys is not None else None
        #: seconds before a write shows in search (Stripe: "usually about a minute")
        self.search_delay = float(search_delay)
        #: seconds an idempotency key is kept (Stripe: at least 24 hours); None keeps them forever
        self.idempotency_window = idempotency_window
        #: drives the limiters, the search lag and idempotency expiry; tests move it by hand
        self.clock: Clock = clock or time.monotonic
        self.limit_clock = lambda: self.clock()
        self.limiter: StripeLimiter | None = None
        self.write_count = 0
        self.operations: Counter[str] = Counter()
        self.exchanges: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._customers: dict[str, _Customer] = {}
        self._seq = 0
        self._writes = 0  # numbers every field write, to tell which copy of a shared field is newer
        self._idempotency: dict[tuple[str, str], _Stored] = {}  # (account, key): Stripe scopes keys per account
        self.route("GET", CUSTOMERS, self._list)
        self.route("POST", CUSTOMERS, self._create)
        self.route("GET", SEARCH, self._search)
        self.route("GET", r"/v1/customers/(?P<customer>[^/]+)", self._retrieve)
        self.route("POST", r"/v1/customers/(?P<customer>[^/]+)", self._update)
        self.route("DELETE", r"/v1/customers/(?P<customer>[^/]+)", self._delete)
        self.route("POST", r"/_sandbox/load", self._ctl_load)
        self.route("POST", r"/_sandbox/reset", self._ctl_reset)
        self.route("GET", r"/_sandbox/customers", self._ctl_customers)
        self.route("POST", r"/_sandbox/customers/(?P<customer>[^/]+)/delete", self._ctl_delete)
        self.route("POST", r"/_sandbox/customers/(?P<customer>[^/]+)/edit", self._ctl_edit)
        self.route("POST", r"/_sandbox/idempotency/expire", self._ctl_expire)
        self.route("GET", r"/_sandbox/accounts", self._ctl_accounts)
        self.route("POST", r"/_sandbox/accounts", self._ctl_add_account)
        self.route("POST", r"/_sandbox/organizations", self._ctl_add_organization)
        self.route("POST", r"/_sandbox/sharing_groups", self._ctl_add_group)
        self.route("POST", r"/_sandbox/rate_limits", self._ctl_rate_limits)
        if rate_limits is not None:
            self.set_rate_limits(rate_limits)
        if data:
            self.load(data)

    def __enter__(self) -> StripeSandbox:
        super().__enter__()
        return self

    def start(self) -> StripeSandbox:
        super().start()
        return self

    @property
    def api_keys(self) -> frozenset[str] | None:
        """The keys that reach the default account (None: any test-mode key)."""
        return self.directory.default_keys

    @api_keys.setter
    def api_keys(self, keys: Collection[str] | None) -> None:
        self.directory.default_keys = frozenset(keys) if keys is not None else None

    # --- Python API ------------------------------------------------------------------------

    def load(self, data: Mapping[str, Any]) -> list[str]:
        """Add accounts, organizations, sharing groups and customers; returns the customers' ids.

        `{"customers": [...]}` go to the default account. `{"accounts": [{"id": "acct_...",
        "keys": [...], "livemode": false, "connected": [...], "rate_limits": {...},
        "customers": [...]}], "organizations": [{"id": "org_...", "keys": ["sk_org_..."],
        "accounts": [...]}], "sharing_groups": [["acct_a", "acct_b"], ...]}` add the rest.
        Each customer takes the create parameters (as Python values: dicts, lists, ints) plus
        optional `id`, `created`, `deleted`. Not counted as writes. Raises ValueError naming
        the entry at fault; nothing is added then.
        """
        unknown = set(data) - {"customers", "accounts", "organizations", "sharing_groups"}
        if unknown:
            raise ValueError(f"stripe: unknown section(s) {sorted(unknown)}; expected customers, accounts, organizations, sharing_groups")
        with self.lock:
            # Validate on copies first, so bad input changes nothing.
            saved_directory = copy.deepcopy(self.directory)
            saved = (dict(self._customers), self._seq, self._writes)
            try:
                return self._load(data)
            except ValueError:
                self.directory = saved_directory
                self._customers, self._seq, self._writes = saved
                raise

    def _load(self, data: Mapping[str, Any]) -> list[str]:
        ids: list[str] = []
        pending: list[tuple[str, str, Mapping[str, Any]]] = []
        for i, entry in enumerate(_entries(data, "accounts")):
            where = f"accounts[{i}]"
            _only(entry, {"id", "keys", "livemode", "connected", "rate_limits", "customers"}, where)
            try:
                added = self.directory.add_account(
                    str(entry.get("id")),
                    keys=_strings(entry.get("keys"), f"{where}.keys"),
                    livemode=bool(entry.get("livemode", False)),
                    connected=_strings(entry.get("connected"), f"{where}.connected"),
                    rate_limits=entry.get("rate_limits"),
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            pending += [(added.id, f"{where}.customers[{j}]", c) for j, c in enumerate(_entries(entry, "customers"))]
        for i, entry in enumerate(_entries(data, "organizations")):
            where = f"organizations[{i}]"
            _only(entry, {"id", "keys", "accounts", "livemode", "rate_limits"}, where)
            try:
                self.directory.add_organization(
                    str(entry.get("id")),
                    accounts=_strings(entry.get("accounts"), f"{where}.accounts"),
                    keys=_strings(entry.get("keys"), f"{where}.keys"),
                    livemode=bool(entry.get("livemode", False)),
                    rate_limits=entry.get("rate_limits"),
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        for i, group in enumerate(data.get("sharing_groups") or []):
            members = group.get("accounts") if isinstance(group, Mapping) else group
            try:
                self.directory.add_sharing_group(_strings(members, f"sharing_groups[{i}]"))
            except ValueError as exc:
                raise ValueError(f"sharing_groups[{i}]: {exc}") from None
        pending = [(DEFAULT_ACCOUNT, f"customers[{j}]", c) for j, c in enumerate(_entries(data, "customers"))] + pending
        for account, where, given in pending:
            entry = dict(given)
            cid = str(entry.pop("id", None) or new_customer_id())
            created = int(entry.pop("created", None) or time.time())
            deleted = bool(entry.pop("deleted", False))
            entry.pop("object", None)
            entry.pop("livemode", None)
            if cid in self._customers:
                raise ValueError(f"{where}: customer {cid} already exists")
            try:
                params = self._python_params(entry, CUSTOMERS, "post")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            record = self._new(cid, created, params, account=account, version=None)
            if deleted:
                self._mark_deleted(record)
            ids.append(cid)
        return ids

    def add_account(
        self,
        id: str,
        *,
        keys: Iterable[str] = (),
        livemode: bool = False,
        connected: Iterable[str] = (),
        rate_limits: Mapping[str, Any] | None = None,
    ) -> None:
        """A Stripe account with its own keys (and, for a Connect platform, its connected accounts)."""
        with self.lock:
            self.directory.add_account(id, keys=keys, livemode=livemode, connected=connected, rate_limits=rate_limits)

    def add_organization(
        self, id: str, *, accounts: Iterable[str], keys: Iterable[str] = (), livemode: bool = False,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> None:
        """A Stripe Organization whose `sk_org_` keys reach `accounts` through Stripe-Context."""
        with self.lock:
            self.directory.add_organization(id, accounts=accounts, keys=keys, livemode=livemode, rate_limits=rate_limits)

    def add_sharing_group(self, accounts: Iterable[str]) -> None:
        """Share every customer of these accounts among them, from now on (customers made before too)."""
        with self.lock:
            self.directory.add_sharing_group(accounts)

    def set_rate_limits(self, limits: RateLimits | None) -> None:
        """Stripe's global and per-endpoint limits, per credential; None turns them off."""
        self.limiter = StripeLimiter(limits, clock=lambda: self.clock()) if limits is not None else None

    def reset(self) -> None:
        """Forget every customer, idempotency key and count (accounts, faults, latency and limits stay)."""
        with self.lock:
            self._customers.clear()
            self._idempotency.clear()
            self._seq = 0
            self._writes = 0
            self.write_count = 0
            self.operations.clear()
            self.exchanges.clear()
            self.requests.clear()
            self.rate_limited = 0
            self.peak_in_flight = 0
            self.overlaps.clear()
            if self.limiter is not None:
                self.set_rate_limits(self.limiter.limits)

    def customers(
        self, include_deleted: bool = False, *, account: str = DEFAULT_ACCOUNT, version: str | None = None
    ) -> list[dict[str, Any]]:
        """Every customer `account` sees, as the API returns it, oldest first (deleted ones as their stub).

        Shared customers made in other accounts of its group are included. `version` picks the
        shared fields (None: the newest).
        """
        with self.lock:
            return [
                self._render(r, account, version) for r in sorted(self._customers.values(), key=lambda r: r.seq)
                if (include_deleted or not r.deleted) and self._visible(r, account)
            ]

    def get_customer(self, id: str, *, account: str = DEFAULT_ACCOUNT, version: str | None = None) -> dict[str, Any] | None:
        with self.lock:
            record = self._customers.get(id)
            return self._render(record, account, version) if record and self._visible(record, account) else None

    def edit_customer(self, id: str, fields: Mapping[str, Any], *, account: str = DEFAULT_ACCOUNT) -> dict[str, Any]:
        """An edit made in the Stripe dashboard of `account`: update semantics, not an API request.

        `None` or "" clears a field; metadata merges key by key; shared fields of a shared
        customer change in every account of the group. Raises KeyError for an unknown or
        deleted customer, ValueError for a field Stripe would refuse.
        """
        with self.lock:
            record = self._customers.get(id)
            if record is None or record.deleted or not self._visible(record, account):
                raise KeyError(id)
            params = self._python_params(fields, CUSTOMER, "post")
            self._write(record, account, None, params)
            return self._render(record, account, None)

    def delete_customer(self, id: str, *, account: str = DEFAULT_ACCOUNT) -> dict[str, Any]:
        """Delete as Stripe does: retrieve then answers `{"id", "object", "deleted": true}`."""
        with self.lock:
            record = self._customers.get(id)
            if record is None or record.deleted or not self._visible(record, account):
                raise KeyError(id)
            self._mark_deleted(record)
            return self._render(record, account, None)

    def expire_idempotency_keys(self, older_than: float = 0.0) -> int:
        """Forget idempotency keys at least `older_than` seconds old (all by default)."""
        with self.lock:
            cutoff = self.clock() - older_than
            gone = [k for k, v in self._idempotency.items() if v.stamp <= cutoff]
            for k in gone:
                del self._idempotency[k]
            return len(gone)

    def inject_lock_timeout(self, count: int = 1, *, method: str | None = None, path: str | None = None) -> Fault:
        """The next `count` matching requests answer 429 `lock_timeout` (stripe-python retries it)."""
        return self.inject_fault(
            count=count, status=429, body=lock_timeout_body(), headers={"Stripe-Should-Retry": "true"},
            method=method, path=path,
        )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                **super().stats(),
                "operations": dict(self.operations),
                "write_count": self.write_count,
                "deletes": self.operations["delete"],
                "idempotent_replays": self.operations["replay"],
                "customers": sum(1 for r in self._customers.values() if not r.deleted),
                # live customers by the account that created them (a shared one counts once)
                "customers_by_account": dict(Counter(r.home for r in self._customers.values() if not r.deleted)),
                "rate_limited_by_reason": dict(self.limiter.refused) if self.limiter else {},
            }

    # --- HTTP plumbing -----------------------------------------------------------------------

    def dispatch(self, req: Request) -> Response:
        if req.path.startswith("/_sandbox/"):
            return super().dispatch(req)
        rid = new_request_id()
        with self.lock:
            try:
                resp = self._authenticate(req) or self._rate_limit(req) or self._idempotent(req, rid)
            except ParamError as exc:
                resp = _problem(exc.problem)
            except Exception as exc:  # a sandbox bug still answers in Stripe's shape
                resp = Response.json(api_error_body(f"sandbox error: {type(exc).__name__}: {exc}"), 500)
        resp.headers.setdefault("Request-Id", rid)
        return resp

    def not_found(self, req: Request) -> Response:
        return stripe_error(
            404,
            f"Unrecognized request URL ({req.method}: {req.path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
            stored=False,
        )

    def method_not_allowed(self, req: Request) -> Response:
        return stripe_error(
            405,
            f"Unrecognized request method ({req.method}: {req.path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
            stored=False,
        )

    def rate_limited_response(self, req: Request) -> Response:
        return Response.json(rate_limit_body(), 429)

    def resource_of(self, req: Request) -> str | None:
        """A customer write, named by the Salesforce account it carries (a create's metadata,
        or the metadata of the customer an update names), so overlapping writes of one
        Salesforce account show in `overlaps` whichever request they are."""
        if req.method != "POST" or not req.path.startswith(CUSTOMERS):
            return None
        path = req.path.rstrip("/")
        if path == CUSTOMERS:
            for k, v in parse_qsl(req.body.decode("utf-8"), keep_blank_values=True):
                if k == "metadata[salesforce_account_id]" and v:
                    return f"salesforce:{v}"
            return None
        cid = path[len(CUSTOMERS) + 1:]
        with self.lock:
            record = self._customers.get(cid)
            if record is not None:
                for copy_ in record.own.values():
                    account = (copy_.get("metadata") or {}).get("salesforce_account_id")
                    if account:
                        return f"salesforce:{account}"
        return f"customer:{cid}"

    def decorate(self, req: Request, resp: Response) -> Response:
        if resp.status >= 400 and not resp.body:
            # an injected fault without a body still answers in Stripe's shape
            body = rate_limit_body() if resp.status == 429 else api_error_body()
            resp = Response.json(body, resp.status, resp.headers)
        resp.headers.setdefault("Request-Id", new_request_id())
        resp.headers["Stripe-Version"] = req.header("stripe-version") or DEFAULT_API_VERSION
        key = req.header("idempotency-key")
        if key and req.method == "POST":
            resp.headers.setdefault("Idempotency-Key", key)
        resp.headers.setdefault("Content-Type", "application/json")
        self.exchanges.append({
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "body": req.body,
            "status": resp.status,
            "account": req.context.get("account"),
            # how the request named its account and version, so tests see what a client sent
            "stripe_version": req.header("stripe-version"),
            "stripe_context": req.header("stripe-context"),
            "stripe_account": req.header("stripe-account"),
            "response": resp.body,
            "replayed": resp.headers.get("Idempotent-Replayed") == "true",
        })
        return resp

    def _ctl_faults(self, req: Request) -> Response:
        spec = req.json() or {}
        kind = spec.get("kind")
        target = {k: spec[k] for k in ("count", "method", "path") if k in spec}
        if kind == "lock_timeout":
            self.inject_lock_timeout(**target)
            return Response.json({"ok": True})
        if kind == "rate_limit":
            self.inject_fault(status=429, body=rate_limit_body(), **target)
            return Response.json({"ok": True})
        if kind == "api_error":
            self.inject_fault(status=500, body=api_error_body(), **target)
            return Response.json({"ok": True})
        return super()._ctl_faults(req)

    def _authenticate(self, req: Request) -> Response | None:
        """Find the account the request acts on (req.context["access"]), or answer Stripe's refusal."""
        header = req.header("authorization") or ""
        scheme, _, credential = header.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credential.strip()).decode("utf-8").partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        challenge = {"WWW-Authenticate": 'Basic realm="Stripe"'}
        if not key:
            # Stripe's error `type` enum has no authentication_error: a 401 says it (and
            # stripe-python raises AuthenticationError from the status).
            return stripe_error(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
                headers=challenge, stored=False,
            )
        access = self.directory.resolve(
            key,
            context=(req.header("stripe-context") or "").strip() or None,
            on_behalf_of=(req.header("stripe-account") or "").strip() or None,
            version=(req.header("stripe-version") or "").strip() or None,
        )
        if isinstance(access, Refusal):
            return stripe_error(
                access.status, access.message, code=access.code, param=access.param,
                headers=challenge if access.status == 401 else None, stored=False,
            )
        req.context["access"] = access
        req.context["account"] = access.account.id
        req.context["version"] = req.header("stripe-version") or DEFAULT_API_VERSION
        return None

    def _rate_limit(self, req: Request) -> Response | None:
        if self.limiter is None:
            return None
        access: Access = req.context["access"]
        limits = self.limiter.limits.overridden(access.limits_override) if access.limits_override else None
        reason = self.limiter.admit(access.limiter_owner, _endpoint(req), livemode=access.livemode, limits=limits)
        if reason is None:
            return None
        self.rate_limited += 1
        return Response.json(rate_limit_body(), 429, {"Stripe-Rate-Limited-Reason": reason})

    def _idempotent(self, req: Request, rid: str) -> Response:
        key = req.header("idempotency-key")
        if req.method != "POST" or not key:
            return self._run(req)
        if len(key) > IDEMPOTENCY_KEY_MAX:
            return stripe_error(
                400, f"Invalid Idempotency-Key: it must be at most {IDEMPOTENCY_KEY_MAX} characters long.",
                stored=False,
            )
        endpoint = f"{req.method} {req.path}"
        scoped = (str(req.context.get("account", DEFAULT_ACCOUNT)), key)
        fingerprint = hashlib.sha256(
            json.dumps(sorted(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True))).encode()
        ).hexdigest()
        stored = self._idempotency.get(scoped)
        if stored is not None and self.idempotency_window is not None and self.clock() - stored.stamp > self.idempotency_window:
            del self._idempotency[scoped]
            stored = None
        if stored is not None:
            if stored.endpoint != endpoint:
                return stripe_error(
                    400,
                    f"Keys for idempotent requests can only be used for the same endpoint they were first used for "
                    f"('{stored.endpoint}' vs '{endpoint}'). Try using a key other than '{key}' if you meant to "
                    "execute a different request.",
                    type="idempotency_error", stored=False,
                )
            if stored.fingerprint != fingerprint:
                return stripe_error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were first used "
                    f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                    type="idempotency_error", stored=False,
                )
            self.operations["replay"] += 1
            return Response(
                stored.status, stored.body,
                {"Content-Type": "application/json;charset=UTF-8", "Idempotent-Replayed": "true", "Original-Request": stored.request_id},
            )
        resp = self._run(req)
        if not isinstance(resp, _NotStored):
            self._idempotency[scoped] = _Stored(endpoint, fingerprint, resp.status, resp.body, rid, self.clock())
        return resp

    def _run(self, req: Request) -> Response:
        try:
            return super().dispatch(req)
        except ParamError as exc:
            return _problem(exc.problem)

    # --- parameters ----------------------------------------------------------------------

    def _form(self, req: Request, path: str) -> dict[str, Any]:
        # stripe-python puts POST parameters in the body; Stripe reads the query too, so do we
        pairs = _query_pairs(req.query) if req.query else []
        pairs += parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
        raw = parse_form(pairs)
        schema = STRIPE.request_schema(path, "post")
        typed: dict[str, Any] = STRIPE.coerce_params(schema, raw)
        return typed

    def _query(self, req: Request, path: str) -> dict[str, Any]:
        raw = parse_form(_query_pairs(req.query))
        typed: dict[str, Any] = STRIPE.coerce_params(STRIPE.query_schema(path, "get"), raw)
        return typed

    def _python_params(self, fields: Mapping[str, Any], path: str, method: str) -> dict[str, Any]:
        raw = {k: ("" if v is None else v) for k, v in fields.items()}
        try:
            typed: dict[str, Any] = STRIPE.coerce_params(STRIPE.request_schema(path, method), raw)
            self._check_rules(typed, None)
        except ParamError as exc:
            raise ValueError(f"{exc.problem.param}: {exc.problem.message}") from exc
        return typed

    def _check_rules(self, params: Mapping[str, Any], current: Mapping[str, Any] | None) -> None:
        """What the description cannot say: metadata limits, invoice prefix, other objects."""
        for name, noun in _REFERENCES.items():
            value = params.get(name)
            if value not in (None, ""):
                raise ParamError(ParamProblem(name, f"No such {noun}: '{value}'", "resource_missing"))
        settings = params.get("invoice_settings") or {}
        if settings.get("default_payment_method") not in (None, ""):
            raise ParamError(ParamProblem(
                "invoice_settings[default_payment_method]",
                f"No such PaymentMethod: '{settings['default_payment_method']}'", "resource_missing",
            ))
        prefix = params.get("invoice_prefix")
        if prefix is not None and not _INVOICE_PREFIX.fullmatch(prefix):
            raise ParamError(ParamProblem(
                "invoice_prefix", "Invalid invoice_prefix: must be 3-12 uppercase letters or numbers."
            ))
        metadata = params.get("metadata")
        if isinstance(metadata, Mapping):
            for key, value in metadata.items():
                if len(key) > METADATA_KEY_MAX:
                    raise ParamError(ParamProblem(
                        f"metadata[{key}]",
                        f"Metadata keys can have up to {METADATA_KEY_MAX} characters, but you passed in a key "
                        f"with {len(key)} characters: {key[:10]}...",
                    ))
                if len(value) > METADATA_VALUE_MAX:
                    raise ParamError(ParamProblem(
                        f"metadata[{key}]",
                        f"Metadata values can have up to {METADATA_VALUE_MAX} characters, but you passed in a "
                        f"value with {len(value)} characters for the key '{key}'.",
                    ))
            merged = dict((current or {}).get("metadata") or {})
            for key, value in metadata.items():
                if value == "":
                    merged.pop(key, None)
                else:
                    merged[key] = value
            if len(merged) > METADATA_MAX_KEYS:
                raise ParamError(ParamProblem(
                    "metadata",
                    f"Metadata can have up to {METADATA_MAX_KEYS} keys, but this request would leave "
                    f"{len(merged)} keys on the object.",
                ))

    # --- customers -----------------------------------------------------------------------

    def _blank(self, cid: str, created: int, account: str) -> dict[str, Any]:
        """A customer as an account holds it before any field is set."""
        livemode = self.directory.accounts[account].livemode if account in self.directory.accounts else False
        # Each account numbers invoices with its own prefix; derived from the ids so that an
        # account's copy of a shared customer shows the same prefix on every read.
        digest = hashlib.sha256(f"{cid}/{account}".encode()).digest()
        prefix = "".join((string.ascii_uppercase + string.digits)[b % 36] for b in digest[:8])
        return {
            "id": cid,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": created,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": prefix,
            "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None, "rendering_options": None},
            "livemode": livemode,
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    def _new(self, cid: str, created: int, params: Mapping[str, Any], *, account: str, version: str | None) -> _Customer:
        self._seq += 1
        self._writes += 1
        data = self._blank(cid, created, account)
        self._apply(data, params)
        n = self._writes
        shared = shared_fields(version)
        record = _Customer(
            self._seq, cid, account,
            own={account: data},
            stamps={account: dict.fromkeys(data, n)},
            common={f: (n, copy.deepcopy(data[f])) for f in shared if f in data},
        )
        self._customers[cid] = record
        self._reindex(record)
        return record

    def _visible(self, record: _Customer, account: str) -> bool:
        return self.directory.shares_with(record.home, account)

    def _view(self, record: _Customer, account: str, version: str | None) -> dict[str, Any]:
        """The customer as `account` sees it at `version` (see the notes above `shared_fields`)."""
        own = record.own.get(account)
        view = copy.deepcopy(own) if own is not None else self._blank(record.id, record.created, account)
        mine = record.stamps.get(account, {})
        home = record.own[record.home]
        for name in shared_fields(version):
            written = record.common.get(name)
            stamp = mine.get(name, -1)
            if written is not None and written[0] > stamp:
                view[name] = copy.deepcopy(written[1])
            elif stamp < 0 and name in home:
                view[name] = copy.deepcopy(home[name])
        return view

    def _write(self, record: _Customer, account: str, version: str | None, params: Mapping[str, Any]) -> None:
        """Apply an update made from `account` at `version`: its copy, and the common one for shared fields."""
        current = self._view(record, account, version)
        self._check_rules(params, current)
        self._keep_indexed(record)
        self._apply(current, params)
        self._writes += 1
        n = self._writes
        own = record.own.get(account)
        if own is None:
            own = record.own[account] = self._blank(record.id, record.created, account)
        stamps = record.stamps.setdefault(account, {})
        shared = shared_fields(version)
        for name in _WRITABLE_FIELDS.intersection(params):
            own[name] = copy.deepcopy(current[name])
            stamps[name] = n
            if name in shared:
                record.common[name] = (n, copy.deepcopy(current[name]))
        self._reindex(record)

    @staticmethod
    def _address(given: Mapping[str, Any]) -> dict[str, Any]:
        # A hash replaces the whole address: parts not given become null.
        return {k: (given.get(k) or None) for k in _ADDRESS_KEYS}

    def _apply(self, data: dict[str, Any], params: Mapping[str, Any]) -> None:
        for name in ("name", "email", "phone", "description"):
            if name in params:
                data[name] = params[name] or None
        if "address" in params:
            data["address"] = self._address(params["address"]) if params["address"] != "" else None
        if "shipping" in params:
            ship = params["shipping"]
            data["shipping"] = None if ship == "" else {
                "address": self._address(ship.get("address") or {}),
                "name": ship.get("name") or None,
                "phone": ship.get("phone") or None,
            }
        if "metadata" in params:
            md = params["metadata"]
            if md == "":
                data["metadata"] = {}
            else:
                merged = dict(data["metadata"])
                for k, v in md.items():
                    if v == "":
                        merged.pop(k, None)
                    else:
                        merged[k] = v
                data["metadata"] = merged
        if "preferred_locales" in params:
            data["preferred_locales"] = list(params["preferred_locales"])
        if "tax_exempt" in params:
            data["tax_exempt"] = params["tax_exempt"] or "none"
        for name in ("balance", "next_invoice_sequence"):
            if name in params:
                data[name] = params[name]
        if "invoice_prefix" in params:
            data["invoice_prefix"] = params["invoice_prefix"]
        if "invoice_settings" in params:
            given = params["invoice_settings"]
            settings = dict(data["invoice_settings"])
            if "custom_fields" in given:
                fields = given["custom_fields"]
                settings["custom_fields"] = None if fields == "" else [{"name": f["name"], "value": f["value"]} for f in fields]
            if "footer" in given:
                settings["footer"] = given["footer"] or None
            data["invoice_settings"] = settings
        # `tax`, `tax_id_data`, `trial_end` and `expand` are accepted and change nothing shown here.

    def _reindex(self, record: _Customer) -> None:
        if self.search_delay <= 0:
            record.index.clear()  # search reads the live record
            return
        now = self.clock()
        record.index.append((now + self.search_delay, None if record.deleted else record.frozen()))
        # keep only the newest entry already visible, plus the pending ones
        visible = [i for i, (t, _) in enumerate(record.index) if t <= now]
        if len(visible) > 1:
            del record.index[: visible[-1]]

    def _searchable(self, record: _Customer) -> _Customer | None:
        """The record as search sees it now: an older copy while the index lags, None if not indexed."""
        if not record.index:
            return None if record.deleted else record
        now = self.clock()
        seen: _Customer | None = None
        for t, snapshot in record.index:
            if t <= now:
                seen = snapshot
        return seen

    def _keep_indexed(self, record: _Customer) -> None:
        """Before a change while search lags: what search shows until the change is indexed."""
        if self.search_delay > 0 and not record.index and not record.deleted:
            record.index.append((float("-inf"), record.frozen()))

    def _mark_deleted(self, record: _Customer) -> None:
        self._keep_indexed(record)
        record.deleted = True
        self._reindex(record)

    def _render(self, record: _Customer, account: str, version: str | None) -> dict[str, Any]:
        if record.deleted:
            return {"id": record.id, "object": "customer", "deleted": True}
        return self._view(record, account, version)

    def _ordered(self, account: str) -> list[_Customer]:
        """Live customers `account` sees, newest first (Stripe's list order)."""
        live = [r for r in self._customers.values() if not r.deleted and self._visible(r, account)]
        return sorted(live, key=lambda r: (r.created, r.seq), reverse=True)

    def _found(self, req: Request) -> _Customer | None:
        """The customer the URL names, if the request's account can see it."""
        record = self._customers.get(req.params["customer"])
        if record is None or not self._visible(record, req.context["account"]):
            return None  # outside the sharing group it does not exist, as in Stripe
        return record

    # --- endpoints -----------------------------------------------------------------------

    def _create(self, req: Request) -> Response:
        self.operations["create"] += 1
        params = self._form(req, CUSTOMERS)
        self._check_rules(params, None)
        account, version = req.context["account"], req.context["version"]
        record = self._new(new_customer_id(), int(time.time()), params, account=account, version=version)
        self.write_count += 1
        return Response.json(self._render(record, account, version))

    def _retrieve(self, req: Request) -> Response:
        self.operations["retrieve"] += 1
        self._query(req, CUSTOMER)
        record = self._found(req)
        if record is None:
            return _no_such_customer(req.params["customer"])
        return Response.json(self._render(record, req.context["account"], req.context["version"]))

    def _update(self, req: Request) -> Response:
        self.operations["update"] += 1
        params = self._form(req, CUSTOMER)
        record = self._found(req)
        if record is None or record.deleted:
            return _no_such_customer(req.params["customer"])
        account, version = req.context["account"], req.context["version"]
        self._write(record, account, version, params)
        self.write_count += 1
        return Response.json(self._render(record, account, version))

    def _delete(self, req: Request) -> Response:
        self.operations["delete"] += 1
        if req.body or req.query:
            raw = parse_form(_query_pairs(req.query) + parse_qsl(req.body.decode("utf-8"), keep_blank_values=True))
            if raw:
                first = next(iter(raw))
                return _problem(ParamProblem(first, f"Received unknown parameter: {first}", "parameter_unknown"))
        record = self._found(req)
        if record is None or record.deleted:
            return _no_such_customer(req.params["customer"])
        self._mark_deleted(record)
        return Response.json(self._render(record, req.context["account"], req.context["version"]))

    @staticmethod
    def _limit(params: Mapping[str, Any]) -> int:
        limit = params.get("limit", 10)
        if limit < 1:
            raise ParamError(ParamProblem("limit", "This value must be greater than or equal to 1."))
        if limit > 100:
            raise ParamError(ParamProblem("limit", "This value must be less than or equal to 100."))
        return int(limit)

    def _list(self, req: Request) -> Response:
        self.operations["list"] += 1
        params = self._query(req, CUSTOMERS)
        limit = self._limit(params)
        if "starting_after" in params and "ending_before" in params:
            raise ParamError(ParamProblem(
                "ending_before", "You may only specify one of these parameters: ending_before, starting_after.",
                "parameters_exclusive",
            ))
        account, version = req.context["account"], req.context["version"]
        rows = self._ordered(account)
        if "email" in params:
            # case-sensitive, as documented; the email the requesting account sees
            rows = [r for r in rows if self._view(r, account, version)["email"] == params["email"]]
        created = params.get("created")
        if created is not None:
            rows = [r for r in rows if self._created_matches(r.created, created)]
        if "test_clock" in params:
            rows = []  # no customer here belongs to a test clock
        key: Callable[[_Customer], tuple[int, int]] = lambda r: (r.created, r.seq)  # noqa: E731
        if "starting_after" in params or "ending_before" in params:
            cursor_param = "starting_after" if "starting_after" in params else "ending_before"
            cursor = self._customers.get(params[cursor_param])
            if cursor is None or cursor.deleted or not self._visible(cursor, account):
                return stripe_error(
                    400, f"No such customer: '{params[cursor_param]}'", code="resource_missing",
                    param=cursor_param, stored=False,
                )
            if cursor_param == "starting_after":
                rows = [r for r in rows if key(r) < key(cursor)]
                page, more = rows[:limit], len(rows) > limit
            else:
                rows = [r for r in rows if key(r) > key(cursor)]
                page, more = rows[-limit:], len(rows) > limit
        else:
            page, more = rows[:limit], len(rows) > limit
        return Response.json({
            "object": "list",
            "data": [self._render(r, account, version) for r in page],
            "has_more": more,
            "url": CUSTOMERS,
        })

    @staticmethod
    def _created_matches(created: int, spec: Any) -> bool:
        if isinstance(spec, int):
            return created == spec
        checks = {"gt": created.__gt__, "gte": created.__ge__, "lt": created.__lt__, "lte": created.__le__}
        return all(checks[op](v) for op, v in spec.items())

    def _search(self, req: Request) -> Response:
        self.operations["search"] += 1
        params = self._query(req, SEARCH)
        limit = self._limit(params)
        query = params["query"]
        try:
            join, clauses = parse_search_query(query)
        except SearchQueryError as exc:
            return stripe_error(400, f"Invalid query: {exc}", param="query", stored=False)
        digest = hashlib.sha256(query.encode()).hexdigest()[:16]
        offset = 0
        if params.get("page"):
            try:
                token = json.loads(base64.urlsafe_b64decode(params["page"] + "=" * (-len(params["page"]) % 4)))
                assert token["q"] == digest
                offset = int(token["o"])
            except Exception:
                return stripe_error(400, "Invalid page: the page token does not belong to this query.", param="page", stored=False)
        account, version = req.context["account"], req.context["version"]
        matches = []
        for record in sorted(self._customers.values(), key=lambda r: (r.created, r.seq), reverse=True):
            if not self._visible(record, account):
                continue
            indexed = self._searchable(record)
            if indexed is None:
                continue
            seen = self._view(indexed, account, version)
            results = [_clause_matches(c, seen) for c in clauses]
            if (all(results) if join == "AND" else any(results)):
                matches.append(seen)
        page = matches[offset:offset + limit]
        more = len(matches) > offset + limit
        next_page = None
        if more:
            next_page = base64.urlsafe_b64encode(
                json.dumps({"q": digest, "o": offset + limit}).encode()
            ).decode().rstrip("=")
        body: dict[str, Any] = {
            "object": "search_result",
            "data": page,
            "has_more": more,
            "next_page": next_page,
            "url": SEARCH,
        }
        if "total_count" in params.get("expand", []):
            body["total_count"] = len(matches)
        return Response.json(body)

    # --- control API ---------------------------------------------------------------------

    def _ctl_load(self, req: Request) -> Response:
        try:
            ids = self.load(req.json() or {})
        except ValueError as exc:
            return Response.json({"ok": False, "error": str(exc)}, 400)
        return Response.json({"ok": True, "ids": ids})

    def _ctl_reset(self, req: Request) -> Response:
        self.reset()
        return Response.json({"ok": True})

    def _ctl_customers(self, req: Request) -> Response:
        include = (req.query_one("include_deleted") or "").lower() in ("1", "true", "yes")
        account = req.query_one("account") or DEFAULT_ACCOUNT
        if account not in self.directory.accounts:
            return Response.json({"ok": False, "error": f"no account {account}"}, 404)
        return Response.json({"data": self.customers(include_deleted=include, account=account, version=req.query_one("version"))})

    def _ctl_delete(self, req: Request) -> Response:
        try:
            return Response.json(self.delete_customer(req.params["customer"], account=req.query_one("account") or DEFAULT_ACCOUNT))
        except KeyError:
            return Response.json({"ok": False, "error": "no such customer"}, 404)

    def _ctl_edit(self, req: Request) -> Response:
        try:
            account = req.query_one("account") or DEFAULT_ACCOUNT
            return Response.json(self.edit_customer(req.params["customer"], req.json() or {}, account=account))
        except KeyError:
            return Response.json({"ok": False, "error": "no such customer"}, 404)
        except ValueError as exc:
            return Response.json({"ok": False, "error": str(exc)}, 400)

    def _ctl_expire(self, req: Request) -> Response:
        older = float((req.json() or {}).get("older_than", 0.0))
        return Response.json({"ok": True, "expired": self.expire_idempotency_keys(older)})

    def _ctl_accounts(self, req: Request) -> Response:
        with self.lock:
            return Response.json(self.directory.describe())

    def _ctl_configure(self, section: str, entry: Any) -> Response:
        try:
            self.load({section: [entry]})
        except (ValueError, TypeError) as exc:
            return Response.json({"ok": False, "error": str(exc)}, 400)
        return Response.json({"ok": True})

    def _ctl_add_account(self, req: Request) -> Response:
        return self._ctl_configure("accounts", req.json() or {})

    def _ctl_add_organization(self, req: Request) -> Response:
        return self._ctl_configure("organizations", req.json() or {})

    def _ctl_add_group(self, req: Request) -> Response:
        return self._ctl_configure("sharing_groups", req.json() or {})

    def _ctl_rate_limits(self, req: Request) -> Response:
        spec = dict(req.json() or {})
        if spec.pop("enabled", True) is False:
            self.set_rate_limits(None)
            return Response.json({"ok": True, "enabled": False})
        try:
            self.set_rate_limits(RateLimits().overridden(spec))
        except ValueError as exc:
            return Response.json({"ok": False, "error": str(exc)}, 400)
        return Response.json({"ok": True, "enabled": True})


def _endpoint(req: Request) -> str:
    """Stripe's name for the operation: every customer id counts against one update endpoint."""
    path = req.path.rstrip("/") or "/"
    if path.startswith(CUSTOMERS + "/") and path != SEARCH:
        path = CUSTOMER
    return f"{req.method.upper()} {path}"


def _entries(data: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    entries = data.get(section) or []
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ValueError(f"{section}: expected a list of mappings")
    return entries


def _only(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: expected a list of non-empty strings")
    return list(value)
