"""The Salesforce source: login, SOQL paging, cursors, merges and deletes, Id write-back.

Talks to Salesforce only through simple-salesforce. It never imports a billing target or the
engine. simple-salesforce builds every URL with https://, so to reach the sandbox over plain
http on loopback the requests session gets an adapter that sends every https request to the
configured loopback address instead (the library itself stays unmodified).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
)

from connector.config import LOOPBACK_HOSTS, SalesforceConfig, SecretSource, is_loopback_url
from connector.errors import (
    AuthenticationError,
    BudgetExhaustedError,
    ConfigError,
    TransientError,
    UnavailableError,
)
from connector.http_env import settled_session
from connector.log import REDACTOR
from connector.sfid import normalize_sf_id


class LoopbackAdapter(HTTPAdapter):
    """Sends every https:// request to an http:// server on loopback (the sandbox).

    simple-salesforce hard-codes https for the instance and for the login hosts
    (login.salesforce.com, {domain}.my.salesforce.com); all of them land on the sandbox.
    """

    def __init__(self, target: str, **kwargs: Any) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"loopback adapter only targets http on loopback, not {target!r}")
        self._netloc = parts.netloc
        super().__init__(**kwargs)

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        request.url = urlunsplit(("http", self._netloc, parts.path, parts.query, parts.fragment))
        return super().send(request, *args, **kwargs)


def loopback_session(target: str) -> requests.Session:
    """A requests session whose https traffic goes to `target` (http://127.0.0.1:PORT)."""
    session = settled_session()
    session.mount("https://", LoopbackAdapter(target))
    return session


# --- the source -----------------------------------------------------------------------------

SF_DATETIME = "%Y-%m-%dT%H:%M:%S.000+0000"
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


# A Salesforce REST datetime, `2026-01-05T03:41:05.000+0000`; also `Z` and `+00:00` offsets and
# no or 1-6 fraction digits, which is what the strptime formats used before accepted.
_SF_DATETIME_SHAPE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:?\d\d)")


# The form Salesforce's REST API writes every datetime in: fixed width, UTC. Stamps all in it
# compare as text in time order, with no parsing.
_SF_DATETIME_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")


def _latest(stamps: list[str]) -> str | None:
    """The latest of some Salesforce datetimes (the first of equal ones), as written."""
    if not stamps:
        return None
    utc = _SF_DATETIME_UTC.fullmatch
    for m in stamps:
        if utc(m) is None:
            break
    else:
        return max(stamps)
    return max(stamps, key=lambda m: parse_sf_datetime(m) or datetime.min.replace(tzinfo=UTC))


def parse_sf_datetime(value: str | None) -> datetime | None:
    """Salesforce REST datetimes: `2026-01-05T03:41:05.000+0000` (also tolerates `Z`), in UTC.

    Parsed per order and per relationship read, so it is on the path of every record: the shape
    is checked with one regex and the value parsed by `datetime.fromisoformat` (Python 3.11
    reads `+0000`), about 25 times faster than `strptime`. The check keeps the parser exact:
    `fromisoformat` alone would also take a bare date or a time without an offset.
    """
    if not value:
        return None
    if _SF_DATETIME_SHAPE.fullmatch(value) is None:
        raise ValueError(f"not a Salesforce datetime: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # the shape, but no such day or time (2026-02-30, 25:00)
        raise ValueError(f"not a Salesforce datetime: {value!r}") from None
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def soql_datetime(value: datetime) -> str:
    """A SOQL datetime literal (UTC, second precision, no quotes)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def soql_stamp(value: str | datetime) -> str:
    """A SOQL datetime literal with milliseconds, for keyset positions: a SystemModstamp has
    millisecond precision, and rounding it to the second would skip or repeat records."""
    dt = parse_sf_datetime(value) if isinstance(value, str) else value
    assert dt is not None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# Relationship -> object for standard relationships Salesforce fixes. Custom ones (`X__r`) can
# point anywhere: their object comes from describe (once per org and object per process).
_STANDARD_RELATIONSHIPS: dict[str, str] = {
    "account": "Account",
    "parent": "Account",
    "billtocontact": "Contact",
    "shiptocontact": "Contact",
    "customerauthorizedby": "Contact",
    "reportsto": "Contact",
    "contact": "Contact",
    "contract": "Contract",
    "opportunity": "Opportunity",
    "quote": "Quote",
    "originalorder": "Order",
    "pricebook2": "Pricebook2",
    "owner": "User",
    "createdby": "User",
    "lastmodifiedby": "User",
    "activatedby": "User",
    "companyauthorizedby": "User",
}
_DESCRIBED: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}

# Changed records per keyset query: the change queries select two or three columns, so they
# take Salesforce's largest page whatever the order page size is. Each asks for one row more
# than a page (to know whether more follow), which leaves the query's cursor open when the
# page is full; Salesforce no longer limits open cursors (the 10 per user went with API 56.0,
# for every API version: "API Query Cursor Limits" in the limits cheat sheet) and drops them
# after two days, so an unread look-ahead row costs nothing.
CHANGES_PAGE = 2000
# Ids per `IN (...)` list: 200 ids of 18 characters keep a query far under SOQL's 100,000
# characters and the 16,384-character URI limit of a GET.
IN_CHUNK = 200
# Query operations one Composite request may hold (Salesforce's limit: 25 subrequests, at most
# 5 of them queries).
COMPOSITE_QUERIES = 5


@dataclass(frozen=True, slots=True)
class Watched:
    """One object whose changes a mapping reads, and how an order reaches it.

    `paths` are id paths from Order (AccountId, Account.ParentId, BillToContactId,
    SBQQ__Quote__r.SBQQ__PrimaryContact__c): a changed record's Id found at one of them makes
    that order's account affected. Order itself has no path: its changes name their accounts.
    """

    sobject: str
    paths: tuple[str, ...]


@dataclass
class ApiUsage:
    """Calls made by this process and the org's daily allowance, from `Sforce-Limit-Info`."""

    calls: int = 0
    used: int | None = None
    limit: int | None = None
    used_at_start: int | None = None
    # Salesforce's clock, from the Date header of the latest answer (second precision).
    server_date: datetime | None = None
    # Answers arrive on three threads (the engine's, the next-page prefetch and the write-back
    # worker): `calls += 1` is a read and a write, and the call bound is counted from it.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        date = response.headers.get("Date")
        m = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        with self._lock:
            self.calls += 1
            if date:
                with contextlib.suppress(TypeError, ValueError):
                    self.server_date = parsedate_to_datetime(date).astimezone(UTC)
            if m:
                self.used, self.limit = int(m.group(1)), int(m.group(2))
                if self.used_at_start is None:
                    self.used_at_start = self.used

    @property
    def remaining(self) -> int | None:
        return None if self.used is None or self.limit is None else self.limit - self.used


@dataclass(frozen=True, slots=True)
class WriteBackResult:
    account_id: str
    ok: bool
    code: str | None = None
    message: str | None = None
    transient: bool = False


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One activated order as read, with the fields the mapping needs."""

    order_id: str
    account_id: str
    activated_at: str | None
    # The latest SystemModstamp of the order and every watched record (the cursor candidate).
    watermark: str | None
    record: dict[str, Any]
    # Each configured write-back field of the Account -> what it holds now (None when empty).
    writeback_values: Mapping[str, str | None] = field(default_factory=dict)

    def writeback_value(self, field_name: str) -> str | None:
        """What the Account's `field_name` holds (None when empty or not read)."""
        return self.writeback_values.get(field_name)

    @property
    def basis_key(self) -> tuple[str, str]:
        """Which order wins when an account has several: the latest activated, then by Id."""
        return (self.activated_at or "", self.order_id)


@dataclass(frozen=True, slots=True)
class DeletedAccount:
    """An Account in the recycle bin; `master_id` is set when it was merged into another."""

    account_id: str
    master_id: str | None
    modstamp: str | None


@dataclass(frozen=True, slots=True)
class OrderPage:
    rows: list[OrderRow]
    total: int | None = None  # the query's totalSize: every order this read will return
    # Rows come in Id order, so "every Id up to this page's last is done" holds after it.
    # Bulk API 2.0 pages do not: Salesforce refuses or ignores ORDER BY in query jobs (it
    # would disable PK chunking), and its chunks arrive in no promised order.
    ordered: bool = True


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One keyset page of changed records, and whether the window holds more after it."""

    records: list[dict[str, Any]]
    more: bool


def _raise(exc: BaseException) -> Any:
    raise exc


def _references(described: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """relationship name (folded) -> (object, id field), from an object's describe."""
    return {
        str(f["relationshipName"]).casefold(): (str(f["referenceTo"][0]), str(f["name"]))
        for f in described.get("fields", [])
        if isinstance(f, dict) and f.get("relationshipName") and f.get("referenceTo")
    }


def _path(record: dict[str, Any], path: str | tuple[str, ...]) -> Any:
    node: Any = record
    for part in path.split(".") if isinstance(path, str) else path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


class Clients:
    """simple-salesforce clients over one login, each used by one thread at a time.

    The engine's thread, the next-page prefetch and the write-back worker call Salesforce at
    the same time, and `requests` does not promise that a Session is safe to share between
    threads (its connection pool is, the cookie jar and adapters' state are not documented
    so). Each call leases an idle client, or makes one (same session id and instance, a
    Session of its own with the same adapters and the same usage hook, so every answer is
    counted once, in one `ApiUsage`), and hands it back after: as many clients as calls ever
    ran at once (three here), each keeping its connections alive between calls.
    """

    def __init__(self, first: Salesforce, make: Callable[[], Salesforce] | None = None) -> None:
        self.first = first
        self._make = make
        self._idle: list[Salesforce] = [first]
        self._lock = threading.Lock()
        self.made = 1

    @contextlib.contextmanager
    def lease(self) -> Iterator[Salesforce]:
        with self._lock:
            client = self._idle.pop() if self._idle else None
            if client is None and self._make is None:
                raise RuntimeError("every Salesforce client is in use and none can be made")
        if client is None:
            assert self._make is not None
            client = self._make()
            with self._lock:
                self.made += 1
        try:
            yield client
        finally:
            with self._lock:
                self._idle.append(client)


@dataclass
class SalesforceSource:
    """Reads orders and accounts, writes customer ids back. One per run."""

    sf: Salesforce
    config: SalesforceConfig
    usage: ApiUsage
    org_id: str
    # Billing account name -> the Account field that receives its customer id (some have none).
    writeback_fields: Mapping[str, str] = field(default_factory=dict)
    # SOQL paths (relative to Order) read with every order whatever the mapping reads: the
    # fields routing rules test, so every order row can be routed.
    extra_fields: Sequence[str] = ()
    budget_start_remaining: int | None = field(default=None)
    last_total_size: int | None = field(default=None)
    # While set, queries are recorded here instead of sent (see `queries_of`).
    capture: list[str] | None = field(default=None)
    # First pages fetched ahead by `prime`, by (soql, include_deleted, batch size); each is
    # taken once.
    _primed: dict[tuple[str, bool, int], Any] = field(default_factory=dict, repr=False)
    # Relationships resolved by describe ("parent.relationship", folded -> (object, id
    # field)), whether in this process or remembered from an earlier one (`learn_relationships`).
    _relationships: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    # One client per concurrent call (see `Clients`); `sf` is the one that logged in.
    clients: Clients | None = field(default=None, repr=False)

    def _lease(self) -> contextlib.AbstractContextManager[Salesforce]:
        if self.clients is None:
            self.clients = Clients(self.sf)
        return self.clients.lease()

    def _call(self, fn: Callable[[Salesforce], Any]) -> Any:
        """`fn` with a client no other thread is using."""
        with self._lease() as sf:
            return fn(sf)

    # --- queries ---------------------------------------------------------------------------

    def query_pages(
        self, soql: str, *, include_deleted: bool = False, batch_size: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield one list of records per Salesforce page; memory is bounded by the page size."""
        if self.capture is not None:
            self.capture.append(soql)  # `queries_of`: built by the code that runs them, not sent
            return
        headers = {"Sforce-Query-Options": f"batchSize={batch_size or self.config.page_size}"}
        result = self._first_page(soql, include_deleted, batch_size or self.config.page_size)
        self.last_total_size = result.get("totalSize")
        while True:
            # The response's own record dicts (and their `attributes`) are not kept while the
            # page is in use: only the stripped copies, which share the nested relationships.
            page = [_strip(r) for r in result.pop("records", None) or []]
            yield page
            del page
            if result.get("done", True):
                return
            next_url = result["nextRecordsUrl"]
            result = self._guard(
                lambda u=next_url: self._call(
                    lambda sf: sf.query_more(u, identifier_is_url=True, headers=headers)
                )
            )

    def _first_page(self, soql: str, include_deleted: bool, batch_size: int) -> dict[str, Any]:
        """The first page of `soql`: the one `prime` fetched already, or a call of its own."""
        primed = self._primed.pop((soql, include_deleted, batch_size), None)
        if isinstance(primed, BaseException):
            # Mapped to the connector's errors as the same answer to a query of its own is.
            self._guard(lambda: _raise(primed))
        if primed is not None:
            page: dict[str, Any] = primed
            return page
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
        result: dict[str, Any] = self._guard(
            lambda: self._call(
                lambda sf: sf.query(soql, include_deleted=include_deleted, headers=headers)
            )
        )
        return result

    def prime(
        self, queries: Sequence[tuple[str, bool, int]], *, describe: Sequence[str] = ()
    ) -> None:
        """Fetch the first page of each (soql, include_deleted, batch size) in one Composite
        call per five queries; `query_pages` and `changes` then take them without a call.

        Salesforce counts a whole Composite request as one call toward the API limits
        (REST API guide, "Send Multiple Requests Using Composite"), and takes at most 25
        subrequests of which at most 5 are query operations. A subrequest's own error (a
        QUERY_TIMEOUT of one object's window) is kept and raised where that query is read, as
        if it had been sent alone; the other objects' pages stand.
        """
        todo = list(dict.fromkeys(q for q in queries if q not in self._primed))
        objects = list(dict.fromkeys(describe))
        if self.capture is not None or not (todo or objects):
            return
        base = f"/services/data/v{self.sf.sf_version}"
        for start in range(0, max(len(todo), 1), COMPOSITE_QUERIES):
            chunk = todo[start : start + COMPOSITE_QUERIES]
            # The describes ride with the first call (they are not query operations).
            described = objects if start == 0 else []
            body = {
                "allOrNone": False,
                "compositeRequest": [
                    {
                        "method": "GET",
                        "url": f"{base}/"
                        + ("queryAll" if deleted else "query")
                        + "/?"
                        + urlencode({"q": soql}),
                        "referenceId": f"q{i}",
                        "httpHeaders": {"Sforce-Query-Options": f"batchSize={batch}"},
                    }
                    for i, (soql, deleted, batch) in enumerate(chunk)
                ]
                + [
                    {
                        "method": "GET",
                        "url": f"{base}/sobjects/{obj}/describe",
                        "referenceId": f"d{i}",
                    }
                    for i, obj in enumerate(described)
                ],
            }
            answer = self._guard(
                lambda b=body: self._call(
                    lambda sf: sf.restful("composite", method="POST", data=json.dumps(b))
                )
            )
            subs = answer.get("compositeResponse") if isinstance(answer, dict) else None
            if not isinstance(subs, list) or len(subs) != len(chunk) + len(described):
                raise TransientError(
                    "Salesforce answered a Composite request with something other than one "
                    "response per subrequest",
                    code="MALFORMED_RESULT",
                )
            for obj, sub in zip(described, subs[len(chunk) :], strict=True):
                # A describe that failed here is made again alone, where its error is raised.
                content = sub.get("body")
                if 200 <= int(sub.get("httpStatusCode") or 0) < 300 and isinstance(content, dict):
                    _DESCRIBED[self._describe_key(obj)] = _references(content)
            for key, sub in zip(chunk, subs[: len(chunk)], strict=True):
                status = int(sub.get("httpStatusCode") or 0)
                content = sub.get("body")
                if 200 <= status < 300 and isinstance(content, dict):
                    self._primed[key] = content
                else:
                    cls = SalesforceMalformedRequest if status == 400 else SalesforceGeneralError
                    self._primed[key] = cls("composite", status, "query", content)

    def activated_orders(
        self,
        fields: Sequence[str],
        *,
        watch: Sequence[str] = ("Account",),
        activated_from: datetime | None = None,
        activated_until: datetime | None = None,
        after_id: str | None = None,
        account_ids: Sequence[str] | None = None,
        referencing: Mapping[str, Sequence[str]] | None = None,
    ) -> Iterator[OrderPage]:
        """Activated orders with every mapped Order, Account and contact field in one query.

        `watch` names the relationships the payload depends on (Account, BillToContact, ...);
        their SystemModstamps are read for the row's watermark. Reads order by Id so a backfill
        can resume after the last Id done. Incremental syncs do not filter here on
        SystemModstamp: they find changed records with `changes` (one selective query per
        object) and read their accounts' orders with `account_ids`. `referencing` reads the
        orders whose field (e.g. Account.ParentId) names one of the given ids: the accounts
        whose `link` mapping reads a link that just changed. Give one path per call: a filter
        that ORs fields of different objects makes Salesforce scan every Order.
        """
        select, where, stamps = self._order_query_parts(
            fields,
            watch=watch,
            activated_from=activated_from,
            activated_until=activated_until,
            after_id=after_id,
            account_ids=account_ids,
            referencing=referencing,
        )
        soql = f"SELECT {', '.join(select)} FROM Order WHERE {' AND '.join(where)} ORDER BY Id"
        # A full read (no id list) of a large org goes on through Bulk API 2.0 after its first
        # REST page: that page's totalSize tells the size, and the job reads on after its
        # last Id, so no call is spent twice.
        full = account_ids is None and not referencing
        threshold = self.config.bulk_threshold
        last_id: str | None = None
        split = [tuple(s.split(".")) for s in stamps]
        fields_read = self._fields_read()
        for page in self.query_pages(soql):
            yield OrderPage(
                rows=[self._order_row(r, split, fields_read) for r in page],
                total=self.last_total_size,
            )
            if page:
                last_id = str(page[-1]["Id"])
            total = self.last_total_size or 0
            if full and threshold and total > threshold and last_id is not None:
                if total > len(page):
                    where.append(f"Id > {soql_quote(last_id)}")
                    # No ORDER BY: Bulk API 2.0 documents it as unsupported in query jobs.
                    bulk = f"SELECT {', '.join(select)} FROM Order WHERE {' AND '.join(where)}"
                    for records in self.bulk_pages(bulk):
                        yield OrderPage(
                            rows=[self._order_row(r, split, fields_read) for r in records],
                            total=total,
                            ordered=False,
                        )
                return

    def order_query(
        self,
        fields: Sequence[str],
        *,
        watch: Sequence[str] = ("Account",),
        activated_from: datetime | None = None,
        activated_until: datetime | None = None,
        after_id: str | None = None,
    ) -> tuple[str, bool, int]:
        """The first query a full `activated_orders` read sends, as `prime` takes it."""
        select, where, _ = self._order_query_parts(
            fields,
            watch=watch,
            activated_from=activated_from,
            activated_until=activated_until,
            after_id=after_id,
            account_ids=None,
            referencing=None,
        )
        soql = f"SELECT {', '.join(select)} FROM Order WHERE {' AND '.join(where)} ORDER BY Id"
        return soql, False, self.config.page_size

    def _order_query_parts(
        self,
        fields: Sequence[str],
        *,
        watch: Sequence[str],
        activated_from: datetime | None,
        activated_until: datetime | None,
        after_id: str | None,
        account_ids: Sequence[str] | None,
        referencing: Mapping[str, Sequence[str]] | None,
    ) -> tuple[list[str], list[str], list[str]]:
        """(select, where, stamp paths) of an order read."""
        stamps = ["SystemModstamp", *[f"{w}.SystemModstamp" for w in watch]]
        base = [
            "Id",
            "AccountId",
            "ActivatedDate",
            *stamps,
            *(f"Account.{f}" for f in self._fields_read()),
            *self.extra_fields,
        ]
        # SOQL names are case-insensitive and Salesforce refuses a field selected twice.
        unique: dict[str, str] = {}
        for name in (*base, *fields):
            unique.setdefault(name.casefold(), name)
        select = list(unique.values())
        # An order of an account in the recycle bin is not billed; when the account is
        # restored its orders show again and syncing resumes on the same customer.
        where = ["StatusCode = 'Activated'", "AccountId != null", "Account.IsDeleted = false"]
        if self.config.order_filter:
            where.append(f"({self.config.order_filter})")
        if activated_from is not None:
            where.append(f"ActivatedDate >= {soql_datetime(activated_from)}")
        if activated_until is not None:
            where.append(f"ActivatedDate < {soql_datetime(activated_until)}")
        if after_id is not None:
            where.append(f"Id > {soql_quote(after_id)}")
        if account_ids is not None:
            where.append("AccountId IN (" + ", ".join(soql_quote(a) for a in account_ids) + ")")
        if referencing:
            where.append(
                "("
                + " OR ".join(
                    f"{path} IN (" + ", ".join(soql_quote(i) for i in ids) + ")"
                    for path, ids in referencing.items()
                )
                + ")"
            )
        return select, where, stamps

    def queries_of(
        self, fields: Sequence[str], watched: Sequence[Watched], account_fields: Sequence[str] = ()
    ) -> list[str]:
        """Every kind of SOQL a sync with these fields sends, built by the same code that sends
        them (with sample ids and a sample window), for `explain`."""
        sample = "001000000000000AAA"
        now = datetime.now(UTC).replace(microsecond=0)
        self.capture = []
        try:
            # The full read of a backfill reads every order by design (and goes through Bulk
            # API above its threshold); the incremental queries are the ones that must stay
            # selective.
            list(self.activated_orders(fields, account_ids=[sample]))
            for w in watched:
                # The first page of a run's window has no upper bound (see the engine's
                # `_prime_sync_reads`); the keyset pages after it do.
                self.changes(
                    w.sobject,
                    since=now - timedelta(hours=1),
                    until=None,
                    fields=account_fields if w.sobject == "Account" else (),
                )
                self.changes(
                    w.sobject,
                    since=now - timedelta(hours=1),
                    until=now,
                    after=(soql_stamp(now - timedelta(minutes=30)), sample),
                    fields=account_fields if w.sobject == "Account" else (),
                )
                for path in w.paths:
                    self.accounts_referencing(path, [sample])
            return list(dict.fromkeys(self.capture))
        finally:
            self.capture = None

    def explain(self, soql: str) -> dict[str, Any]:
        """Salesforce's query plan for `soql` (`/query/?explain=`): plans cheapest first."""
        result: dict[str, Any] = self._guard(
            lambda: self._call(lambda sf: sf.restful("query/", params={"explain": soql}))
        )
        return result

    def bulk_pages(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        """The rows of a Bulk API 2.0 query job, shaped as REST returns them, one list of at
        most `page_size` per yield. Each result set (`bulk_page_size` rows, one call) is
        parsed and handed on in pages; only one set is held at a time."""
        obj = re.search(r"\bFROM\s+(\w+)", soql, re.IGNORECASE)
        sobject = obj.group(1) if obj else "Order"
        # The job's result sets are fetched lazily, by the client that created the job: that
        # client is this read's alone until the read ends.
        with self._lease() as sf:
            results = self._guard(
                lambda: getattr(sf.bulk2, sobject).query(
                    soql,
                    max_records=self.config.bulk_page_size,
                    wait=self.config.bulk_poll_seconds,
                )
            )
            size = self.config.page_size
            while True:
                csv_text = self._guard(lambda: next(results, None))
                if csv_text is None:
                    return
                # Parsed a page at a time: the set's text is held (one string, megabytes), its
                # rows only `page_size` at a time. Parsing the whole set first held 10,000
                # nested dicts per set, twice while the prefetch crossed from one set to the
                # next.
                reader = csv.DictReader(_lines(csv_text))
                while page := [_from_bulk_csv(r) for r in itertools.islice(reader, size)]:
                    yield page
                del reader, csv_text

    def change_query(
        self,
        sobject: str,
        *,
        since: datetime,
        until: datetime | None,
        after: tuple[str, str] | None = None,
        fields: Sequence[str] = (),
        limit: int = CHANGES_PAGE,
    ) -> tuple[str, bool, int]:
        """The query `changes` sends for these arguments, as `prime` takes it (`until` None:
        no upper bound)."""
        where = [f"SystemModstamp >= {soql_stamp(since)}"]
        if until is not None:
            where.append(f"SystemModstamp < {soql_stamp(until)}")
        if after is not None:
            stamp, last_id = soql_stamp(after[0]), soql_quote(after[1])
            where.append(
                f"(SystemModstamp > {stamp} OR (SystemModstamp = {stamp} AND Id > {last_id}))"
            )
        if sobject == "Order":
            # Only activated orders are billed; their accounts are what the change affects.
            where += ["StatusCode = 'Activated'", "AccountId != null"]
        unique: dict[str, str] = {}
        for name in (
            "Id",
            "SystemModstamp",
            *(["AccountId"] if sobject == "Order" else []),
            *fields,
        ):
            unique.setdefault(name.casefold(), name)
        # One record more than a page: a first batch that is not `done` says that more
        # follow, so a window that ends on a full page costs no empty query after it. Only
        # the first batch is read; the next page is a new keyset query.
        soql = (
            f"SELECT {', '.join(unique.values())} FROM {sobject} WHERE {' AND '.join(where)} "
            f"ORDER BY SystemModstamp, Id LIMIT {int(limit) + 1}"
        )
        return soql, False, min(2000, max(200, int(limit)))

    def changes(
        self,
        sobject: str,
        *,
        since: datetime,
        until: datetime | None,
        after: tuple[str, str] | None = None,
        fields: Sequence[str] = (),
        limit: int = CHANGES_PAGE,
    ) -> ChangePage:
        """One keyset page of the records of `sobject` changed in [since, until).

        `SystemModstamp` is indexed on every object, so a range on it alone is selective; the
        keyset condition `after` = (SystemModstamp, Id) of the last record of the previous
        page ORs two conditions on the same object's own fields, which keeps the index. Each
        page is its own short query (no query locator to expire, nothing computed ahead),
        so a window that times out can be narrowed from where it stopped. Raises
        TransientError(code="QUERY_TIMEOUT") when Salesforce gives up on it.
        """
        soql, deleted, batch = self.change_query(
            sobject, since=since, until=until, after=after, fields=fields, limit=limit
        )
        if self.capture is not None:
            self.capture.append(soql)
            return ChangePage([], more=False)
        first = self._first_page(soql, deleted, batch)
        records = [_strip(r) for r in first.get("records", [])][: int(limit)]
        more = not first.get("done", True) or len(first.get("records", [])) > len(records)
        return ChangePage(records, more=more and bool(records))

    def accounts_referencing(self, path: str, ids: Sequence[str]) -> list[str]:
        """The accounts of the activated orders whose `path` (an id path from Order) names one
        of `ids`: the accounts a change of those records affects. Their orders are then read
        whole by AccountId, so the order an account is billed from is chosen among all its
        orders, not only the ones that reach the changed record.

        Every query filters its own object's field: a path through relationships
        (`SBQQ__Quote__r.SBQQ__PrimaryContact__c`) is walked one hop at a time (the quotes of
        those contacts, then the orders of those quotes), because a filter on a related
        object's field cannot lead with an index.
        """
        if not ids:
            return []
        in_list = "(" + ", ".join(soql_quote(i) for i in ids) + ")"
        parts = path.split(".")
        if len(parts) == 1:
            if path.casefold() == "accountid":
                return [normalize_sf_id(i, what="Account Id") for i in ids]
            where = ["StatusCode = 'Activated'", "AccountId != null", f"{path} IN {in_list}"]
            if self.config.order_filter:
                where.append(f"({self.config.order_filter})")
            soql = f"SELECT AccountId FROM Order WHERE {' AND '.join(where)}"
            out: dict[str, None] = {}
            for page in self.query_pages(soql):
                for r in page:
                    if r.get("AccountId"):
                        out[normalize_sf_id(str(r["AccountId"]), what="Order.AccountId")] = None
            return list(out)
        parent = "Order"
        for rel in parts[:-2]:
            parent, _ = self._relationship(parent, rel)
        target, id_field = self._relationship(parent, parts[-2])
        soql = f"SELECT Id FROM {target} WHERE {parts[-1]} IN {in_list}"
        found: dict[str, None] = {}
        for page in self.query_pages(soql):
            for r in page:
                found[normalize_sf_id(str(r["Id"]), what=f"{target}.Id")] = None
        up = ".".join([*parts[:-2], id_field])
        hits = list(found)
        accounts: dict[str, None] = {}
        for start in range(0, len(hits), IN_CHUNK):
            accounts.update(
                dict.fromkeys(self.accounts_referencing(up, hits[start : start + IN_CHUNK]))
            )
        return list(accounts)

    def watched_objects(self, relationships: Sequence[str]) -> list[Watched]:
        """Order first, then every object the relationships reach, with the id paths to them.

        `Account.Parent` and `Account` both reach Account: one object, one cursor, two paths.
        Standard relationships resolve without a call; a custom one (`X__r`) needs its parent
        object's describe, made once per org and object for the life of the process.
        """
        paths: dict[str, dict[str, None]] = {}
        for rel in relationships:
            parent = "Order"
            prefix: list[str] = []
            target, id_field = "Order", "Id"
            for part in rel.split("."):
                target, id_field = self._relationship(parent, part)
                id_path = ".".join([*prefix, id_field])
                prefix.append(part)
                parent = target
            paths.setdefault(target, {})[id_path] = None
        out = [Watched("Order", ())]
        out += [Watched(obj, tuple(p)) for obj, p in paths.items() if obj != "Order"]
        return out

    def _describe_key(self, sobject: str) -> tuple[str, str]:
        return (f"{self.org_id}:{self.sf.sf_instance}", sobject.casefold())

    def resolve_relationships(
        self, relationships: Sequence[str], alongside: Sequence[tuple[str, bool, int]] = ()
    ) -> None:
        """Describe the objects `relationships` (paths from Order) go through by custom
        relationships, not known yet, in Composite calls, one hop of the paths per call, with
        the `alongside` queries (which do not depend on them) riding one per call, in order:
        `query_pages` then takes their first pages without a call. A backfill resolves what the
        syncs after it watch this way at no cost of its own for paths of up to two custom hops
        (its deletions query and its first order page carry the describes)."""
        free = list(alongside)
        for _ in range(8):  # a path of more hops than this is read hop by hop by describe
            parents = self._undescribed(relationships)
            if not parents:
                return
            self.prime(free[:1], describe=parents)
            free = free[1:]
            if any(self._describe_key(p) not in _DESCRIBED for p in parents):
                return  # a describe failed: `_relationship` describes it alone and says why

    def _undescribed(self, relationships: Sequence[str]) -> list[str]:
        """The objects whose describe the next hop of some path needs."""
        out: dict[str, None] = {}
        for rel in relationships:
            parent = "Order"
            for part in rel.split("."):
                if (
                    not part.casefold().endswith("__r")
                    and part.casefold() in _STANDARD_RELATIONSHIPS
                ):
                    parent = _STANDARD_RELATIONSHIPS[part.casefold()]
                    continue
                learned = self._relationships.get(f"{parent}.{part}".casefold())
                refs = _DESCRIBED.get(self._describe_key(parent))
                found = learned or (refs or {}).get(part.casefold())
                if found is None:
                    if refs is None:
                        out[parent] = None
                    break
                parent = found[0]
        return list(out)

    def known_relationships(self) -> dict[str, tuple[str, str]]:
        """The custom relationships resolved by describe so far ("Parent.Name__r", folded ->
        (object, id field)), for the state store to remember between runs."""
        return dict(self._relationships)

    def learn_relationships(self, known: Mapping[str, Sequence[str]]) -> None:
        """Relationships an earlier run resolved: no describe call for them. Salesforce does
        not let a lookup field change the object it points to once created, so what describe
        said stays true while the field exists (the engine still re-describes once a day)."""
        for key, value in known.items():
            if len(value) == 2 and all(isinstance(v, str) and v for v in value):
                self._relationships[key.casefold()] = (str(value[0]), str(value[1]))

    def _relationship(self, parent: str, name: str) -> tuple[str, str]:
        """(object, id field) of relationship `name` on `parent`."""
        if not name.casefold().endswith("__r"):
            known = _STANDARD_RELATIONSHIPS.get(name.casefold())
            if known is not None:
                return known, f"{name}Id"
        learned = self._relationships.get(f"{parent}.{name}".casefold())
        if learned is not None:
            return learned
        key = self._describe_key(parent)
        refs = _DESCRIBED.get(key)
        if refs is None:
            refs = _DESCRIBED[key] = _references(self.describe(parent))
        found = refs.get(name.casefold())
        if found is not None:
            self._relationships[f"{parent}.{name}".casefold()] = found
        if found is None:
            raise ConfigError(
                f"the mapping reads {parent}.{name}, but Salesforce's {parent} has no relationship "
                f"named {name!r}; run `mappings check --online` to see which fields exist"
            )
        return found

    def server_time(self) -> datetime:
        """Salesforce's clock now: the Date of the latest answer, or of a cheap call if none.

        The incremental cursor moves to this time taken before a run reads its orders: every
        change stamped before it is visible to that read (the overlap covers commit lag).
        """
        if self.usage.server_date is None:
            self._guard(lambda: self._call(lambda sf: sf.limits()))
        if self.usage.server_date is None:
            raise UnavailableError(
                "Salesforce answered without a Date header; the connector cannot tell which "
                "changes a run has read"
            )
        return self.usage.server_date

    def deleted_query(self, *, since: datetime | None) -> tuple[str, bool, int]:
        """The query `deleted_accounts` sends, as `prime` takes it."""
        where = ["IsDeleted = true"]
        if since is not None:
            where.append(f"SystemModstamp >= {soql_datetime(since)}")
        soql = (
            f"SELECT Id, MasterRecordId, SystemModstamp FROM Account WHERE {' AND '.join(where)} "
            "ORDER BY SystemModstamp, Id"
        )
        return soql, True, self.config.page_size

    def deleted_accounts(self, *, since: datetime | None) -> Iterator[list[DeletedAccount]]:
        """Accounts deleted or merged away since `since` (queryAll: the recycle bin included).

        A merge shows as the losing account deleted with MasterRecordId naming the winner.
        """
        soql, _, _ = self.deleted_query(since=since)
        for page in self.query_pages(soql, include_deleted=True):
            yield [
                # Both ids key links in the store, so both in the 18-character form: a master
                # named in the 15-character form must still find the winner's link.
                DeletedAccount(
                    account_id=normalize_sf_id(str(r["Id"]), what="Account.Id"),
                    master_id=normalize_sf_id(str(master), what="Account.MasterRecordId")
                    if (master := r.get("MasterRecordId"))
                    else None,
                    modstamp=r.get("SystemModstamp"),
                )
                for r in page
            ]

    def _order_row(
        self,
        record: dict[str, Any],
        stamps: Sequence[str | tuple[str, ...]],
        fields_read: Sequence[str] | None = None,
    ) -> OrderRow:
        # Called per record: callers pass the stamp paths split and the fields listed once
        # per page (splitting them per record cost more than the rest of the row).
        marks = []
        for path in stamps:
            node: Any = record
            for part in path.split(".") if isinstance(path, str) else path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, str):
                marks.append(node)
        account = record.get("Account") or {}
        values = {
            f: _field_value(account, f) if isinstance(account, dict) else None
            for f in (self._fields_read() if fields_read is None else fields_read)
        }
        return OrderRow(
            order_id=str(record["Id"]),
            account_id=normalize_sf_id(str(record["AccountId"]), what="Order.AccountId"),
            activated_at=record.get("ActivatedDate"),
            watermark=_latest(marks),
            record=record,
            writeback_values=values,
        )

    def _fields_read(self) -> list[str]:
        """Every write-back field, once (field names are case-insensitive in Salesforce)."""
        unique: dict[str, str] = {}
        for f in self.writeback_fields.values():
            unique.setdefault(f.casefold(), f)
        return list(unique.values())

    def legacy_writeback_field(self) -> str | None:
        """The field the engine of the previous release writes to: the first account's."""
        return next(iter(self.writeback_fields.values()), None)

    def describe(self, sobject: str) -> dict[str, Any]:
        result: dict[str, Any] = self._guard(
            lambda: self._call(lambda sf: getattr(sf, sobject).describe())
        )
        return result

    # --- write-back ------------------------------------------------------------------------

    def write_back(
        self, pairs: Sequence[tuple[str, str]], field_name: str | None = None
    ) -> list[WriteBackResult]:
        """Set `field_name` (by default the first billing account's write-back field) on
        Accounts, 200 a call, checking every per-record result."""
        out: list[WriteBackResult] = []
        size = self.config.writeback_batch_size
        fld = field_name or self.legacy_writeback_field()
        if fld is None:
            # No billing account writes its id back: there is nothing to write, and nothing failed.
            return [WriteBackResult(acc, True) for acc, _ in pairs]
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            body = {
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": "Account"}, "id": acc, fld: cus} for acc, cus in chunk
                ],
            }
            results = self._guard(
                lambda b=body: self._call(
                    lambda sf: sf.restful("composite/sobjects", method="PATCH", data=json.dumps(b))
                )
            )
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise TransientError(
                    "Salesforce answered the write-back with something other than a list of "
                    "results; the ids stay pending",
                    code="MALFORMED_RESULT",
                )
            # Results come back in request order; a record without one did not demonstrably save.
            padded = results + [
                {
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "NO_RESULT",
                            "message": "Salesforce returned no result for this record",
                        }
                    ],
                }
            ] * (len(chunk) - len(results))
            for (acc, _cus), res in zip(chunk, padded, strict=False):
                if res.get("success"):
                    out.append(WriteBackResult(acc, True))
                else:
                    err = (res.get("errors") or [{}])[0]
                    code = err.get("statusCode") or "UNKNOWN"
                    out.append(
                        WriteBackResult(
                            acc,
                            False,
                            code,
                            err.get("message"),
                            transient=code
                            in {
                                "UNABLE_TO_LOCK_ROW",
                                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                "NO_RESULT",
                            },
                        )
                    )
        return out

    # --- budget and errors -------------------------------------------------------------------

    def check_budget(self) -> None:
        """Stop before using more than `api_budget_share` of what remained when the run began."""
        if self.usage.used_at_start is None or self.usage.limit is None or self.usage.used is None:
            return
        remaining_at_start = self.usage.limit - self.usage.used_at_start
        spent = self.usage.used - self.usage.used_at_start
        allowed = int(remaining_at_start * self.config.api_budget_share)
        if spent >= allowed:
            raise BudgetExhaustedError(
                f"Salesforce API budget guard: this run used {spent} calls, its share is {allowed} "
                f"({self.config.api_budget_share:.0%} of the {remaining_at_start} left today); stopping cleanly"
            )

    def _guard(self, fn: Any) -> Any:
        self.check_budget()
        try:
            return fn()
        except SalesforceExpiredSession:
            raise AuthenticationError(
                "Salesforce session expired or invalid; with auth 'access_token' set a fresh "
                "SALESFORCE_ACCESS_TOKEN, or use jwt/password/client_credentials auth so the connector can log in again"
            ) from None
        except SalesforceRefusedRequest as exc:
            code = _error_code(exc)
            if code == "REQUEST_LIMIT_EXCEEDED":
                raise BudgetExhaustedError(
                    "Salesforce refused the call: the org's daily API limit is exhausted (REQUEST_LIMIT_EXCEEDED)"
                ) from None
            raise UnavailableError(
                f"Salesforce refused the request ({code}): {_error_message(exc)}"
            ) from None
        except SalesforceError as exc:
            code = _error_code(exc)
            if (
                code in {"QUERY_TIMEOUT", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"}
                or (exc.status or 0) >= 500
            ):
                raise TransientError(
                    f"Salesforce {code or exc.status}: {_error_message(exc)}", code=code
                ) from None
            raise UnavailableError(
                f"Salesforce answered {exc.status} {code}: {_error_message(exc)}"
            ) from None
        except SalesforceOperationError as exc:
            # A Bulk API 2.0 job that failed or was aborted, or that did not finish in time.
            raise TransientError(
                f"Salesforce Bulk API query job did not complete: {str(exc)[:300]}",
                code="BULK_JOB",
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"Salesforce unreachable: {type(exc).__name__}", code="connection"
            ) from None


def _error_code(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode") or "")
    return ""


def _error_message(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("message") or "")
    return str(content)[:300]


_BULK_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _from_bulk_csv(flat: Mapping[str, str]) -> dict[str, Any]:
    """A Bulk API 2.0 CSV row as the REST API shapes the record, so the mapping, payload hashes
    and digests see the same values whichever API read it: `Account.Name` columns nested under
    `Account`, an empty value as null (Salesforce stores no empty strings), and datetimes in
    REST's `+0000` form (Bulk writes `Z`). Numbers and booleans stay text: the mapping reads
    every value as text, and REST's `true`/`12.5` read as the same text."""
    out: dict[str, Any] = {}
    for column, raw in flat.items():
        value: Any = None if raw == "" else raw
        if isinstance(value, str) and _BULK_DATETIME.match(value):
            value = value[:-1] + "+0000"
        parts = column.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def _lines(text: str) -> Iterator[str]:
    """The lines of `text`, each with its line break, one at a time: what `csv.reader` reads
    (a quoted field that spans lines is joined by the reader), without a copy of the whole text
    (`io.StringIO` holds one of up to four bytes a character)."""
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        stop = end if stop < 0 else stop + 1
        yield text[start:stop]
        start = stop


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    """Records keep their nested relationship dicts; only the top-level attributes go."""
    return {k: v for k, v in record.items() if k != "attributes"}


def _field_value(account: Mapping[str, Any], name: str) -> str | None:
    value = account.get(name)
    if value is None:
        folded = name.casefold()
        value = next((v for k, v in account.items() if k.casefold() == folded), None)
    return (value.strip() or None) if isinstance(value, str) else None


def connect(
    config: SalesforceConfig,
    secrets: SecretSource,
    *,
    writeback_fields: Mapping[str, str] | None = None,
    extra_fields: Sequence[str] = (),
) -> SalesforceSource:
    """Log in with the configured method. Secrets come only from the environment or files."""
    loopback = (
        config.instance_url is not None
        and is_loopback_url(config.instance_url)
        and config.instance_url.startswith("http://")
    )
    session = (
        loopback_session(config.instance_url)
        if loopback and config.instance_url
        else settled_session()
    )
    usage = ApiUsage()
    session.hooks["response"].append(usage.observe)
    # Plain dicts for records: simple-salesforce's default OrderedDict hook runs in Python for
    # every JSON object of every page (and dicts keep key order anyway).
    kwargs: dict[str, Any] = {
        "session": session,
        "version": config.api_version,
        "object_pairs_hook": None,
    }
    try:
        if config.auth == "access_token":
            token = secrets.require(
                "SALESFORCE_ACCESS_TOKEN",
                "auth 'access_token' needs a session id or OAuth access token",
            )
            sf = Salesforce(instance_url=config.instance_url, session_id=token, **kwargs)
        elif config.auth == "password":
            password = secrets.require(
                "SALESFORCE_PASSWORD", "auth 'password' needs the integration user's password"
            )
            # OAuth username-password flow: Salesforce wants the security token appended.
            password += secrets.get("SALESFORCE_SECURITY_TOKEN") or ""
            secret = secrets.require(
                "SALESFORCE_CONSUMER_SECRET",
                "auth 'password' needs the connected app's consumer secret",
            )
            sf = Salesforce(
                username=config.username,
                password=password,
                consumer_key=config.consumer_key,
                consumer_secret=secret,
                domain=config.domain,
                **kwargs,
            )
        elif config.auth == "jwt":
            key_file = secrets.environ.get("SALESFORCE_PRIVATE_KEY_FILE")
            key = None if key_file else secrets.get("SALESFORCE_PRIVATE_KEY")
            if not key_file and not key:
                raise ConfigError(
                    "set SALESFORCE_PRIVATE_KEY_FILE to the connected app's private key file (PEM) for auth 'jwt'"
                )
            sf = Salesforce(
                username=config.username,
                consumer_key=config.consumer_key,
                privatekey_file=key_file,
                privatekey=key,
                domain=config.domain,
                **kwargs,
            )
        else:
            secret = secrets.require(
                "SALESFORCE_CONSUMER_SECRET",
                "auth 'client_credentials' needs the connected app's consumer secret",
            )
            domain = config.domain
            if domain in ("login", "test"):
                raise ConfigError(
                    "auth 'client_credentials' needs salesforce.domain set to your My Domain (e.g. 'acme.my')",
                    key="salesforce.domain",
                )
            sf = Salesforce(
                consumer_key=config.consumer_key, consumer_secret=secret, domain=domain, **kwargs
            )
    except SalesforceAuthenticationFailed as exc:
        raise AuthenticationError(
            f"Salesforce login ({config.auth}) failed: {_login_reason(exc)}"
        ) from None
    except requests.RequestException as exc:
        raise UnavailableError(f"Salesforce unreachable at login: {type(exc).__name__}") from None
    REDACTOR.add(sf.session_id)  # whatever its shape, the session id never reaches a log
    org_id = config.org_id or _org_from_session(sf.session_id) or "unknown"
    login = sf

    def another_client() -> Salesforce:
        """A client over the same login with a Session of its own (no login call)."""
        own = (
            loopback_session(config.instance_url)
            if loopback and config.instance_url
            else settled_session()
        )
        own.hooks["response"].append(usage.observe)
        return Salesforce(
            instance=login.sf_instance,
            session_id=login.session_id,
            session=own,
            version=config.api_version,
            # Plain dicts, as the first client's (see above).
            object_pairs_hook=None,
        )

    return SalesforceSource(
        sf=sf,
        clients=Clients(sf, another_client),
        config=config,
        usage=usage,
        org_id=org_id,
        writeback_fields=dict(writeback_fields or {}),
        extra_fields=tuple(extra_fields),
    )


def _login_reason(exc: SalesforceAuthenticationFailed) -> str:
    """Salesforce's own reason (INVALID_LOGIN: ..., invalid_grant: authentication failure).

    The exception's `message` attribute is simple-salesforce's unformatted template
    ('... Response content: {content}'); the reason is in `code` and `auth_message`.
    """
    reason = getattr(exc, "auth_message", None)
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    if not reason:
        content = exc.content
        reason = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    code = f"{exc.code}: " if getattr(exc, "code", None) not in (None, "") else ""
    return f"{code}{reason.strip()[:500] or 'no reason given'}"


def _org_from_session(session_id: str | None) -> str | None:
    # Salesforce session ids and OAuth tokens start with the 15-character org id, then "!".
    if session_id and re.match(r"^00D[A-Za-z0-9]{12}!", session_id):
        return session_id[:15]
    return None


def chunked(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for i in ids:
        batch.append(i)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_salesforce_id(value: str) -> bool:
    return bool(_ID.match(value))


def modstamp_floor(cursor: str | None, overlap_seconds: int) -> datetime | None:
    dt = parse_sf_datetime(cursor)
    return dt - timedelta(seconds=overlap_seconds) if dt else None
