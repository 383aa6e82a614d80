"""A local Salesforce org: Account, Contact, Order and the CPQ quote, over REST as the real
service answers it, and a Python API for tests to shape the org directly.

It speaks enough of REST (query/queryAll with paging, sObject rows, deleted/updated, sObject
Collections, describe, limits, OAuth token logins, Bulk API 2.0 query) that the unmodified
simple-salesforce client works against it through `connector.salesforce.loopback_session`. What it must never do
is answer something it does not understand: SOQL beyond the supported subset is refused with
MALFORMED_QUERY, unknown fields and objects with Salesforce's own error codes.

Every change moves SystemModstamp on a logical clock that never goes backwards, one second per
change, so cursors built on SystemModstamp see every change exactly once past their mark.
"""

from __future__ import annotations

import base64
import copy
import csv
import hmac
import io
import itertools
import json
import random
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from connector.sandbox.http import Request, Response, SandboxServer
from connector.sandbox.query_plan import INDEXED, QueryTimeouts
from connector.sandbox.query_plan import explain as explain_plan
from connector.sandbox.soql import SoqlError, compile_query, parse_datetime
from connector.sandbox.soql import parse as parse_soql

# --- schema ---------------------------------------------------------------------------------

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "datetime": "xsd:dateTime",
    "date": "xsd:date",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
}
# Fields only the org itself changes, through a change, a delete or a merge.
_ORG_MANAGED = frozenset(
    {"Id", "IsDeleted", "MasterRecordId", "CreatedDate", "LastModifiedDate", "SystemModstamp"}
)
_TEXT_TYPES = frozenset({"string", "textarea", "picklist", "phone", "email", "url", "reference"})
_STAMP_FIELDS = ("CreatedDate", "LastModifiedDate", "SystemModstamp")
_SYSTEM = {"IsDeleted", "MasterRecordId", "CreatedDate", "LastModifiedDate", "SystemModstamp"}


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: str
    label: str
    length: int = 0
    reference_to: str | None = None
    relationship_name: str | None = None
    child_relationship: str | None = None  # name of this lookup seen from the parent
    custom: bool = False
    calculated: bool = False
    formula: str | None = None
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    required: bool = False  # on create, Salesforce's REQUIRED_FIELD_MISSING
    auto_number: bool = False
    picklist: tuple[str, ...] = ()
    precision: int = 0
    scale: int = 0

    def describe(self) -> dict[str, Any]:
        string_like = self.type in (
            "string",
            "textarea",
            "picklist",
            "phone",
            "email",
            "url",
            "id",
            "reference",
        )
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.length if string_like else 0,
            "byteLength": self.length * 3 if string_like else 0,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 0,
            "custom": self.custom,
            "calculated": self.calculated,
            "calculatedFormula": self.formula,
            "autoNumber": self.auto_number,
            "createable": self.createable,
            "updateable": self.updateable,
            "nillable": self.nillable,
            "defaultedOnCreate": self.name in _SYSTEM or self.name == "Id" or self.auto_number,
            "filterable": self.type != "textarea" or self.length <= 255,
            "sortable": self.type != "textarea" or self.length <= 255,
            "groupable": self.type not in ("double", "currency", "datetime", "textarea"),
            "externalId": False,
            "unique": False,
            "idLookup": self.type == "id" or self.name == "OrderNumber",
            "nameField": self.name == "Name",
            "referenceTo": [self.reference_to] if self.reference_to else [],
            "relationshipName": self.relationship_name,
            "relationshipOrder": None,
            "polymorphicForeignKey": False,
            "cascadeDelete": False,
            # CurrencyIsoCode takes only the org's active currencies
            "restrictedPicklist": bool(self.picklist)
            and self.name in ("Status", "StatusCode", "CurrencyIsoCode"),
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
            "defaultValue": None,
            "deprecatedAndHidden": False,
            "htmlFormatted": False,
            "caseSensitive": False,
            "inlineHelpText": None,
        }


@dataclass(frozen=True, slots=True)
class ObjectDef:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: tuple[FieldDef, ...]
    custom: bool = False
    mergeable: bool = False
    by_lower: dict[str, FieldDef] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in self.fields:
            self.by_lower[f.name.lower()] = f

    def field(self, name: str) -> FieldDef | None:
        return self.by_lower.get(name.lower())


def _sys(obj: str) -> list[FieldDef]:
    return [
        FieldDef("Id", "id", f"{obj} ID", 18, createable=False, updateable=False, nillable=False),
        FieldDef(
            "IsDeleted", "boolean", "Deleted", createable=False, updateable=False, nillable=False
        ),
    ]


def _stamps() -> list[FieldDef]:
    return [
        FieldDef(
            "CreatedDate",
            "datetime",
            "Created Date",
            createable=False,
            updateable=False,
            nillable=False,
        ),
        FieldDef(
            "LastModifiedDate",
            "datetime",
            "Last Modified Date",
            createable=False,
            updateable=False,
            nillable=False,
        ),
        FieldDef(
            "SystemModstamp",
            "datetime",
            "System Modstamp",
            createable=False,
            updateable=False,
            nillable=False,
        ),
    ]


def _address(prefix: str, label: str) -> list[FieldDef]:
    return [
        FieldDef(f"{prefix}Street", "textarea", f"{label} Street", 255),
        FieldDef(f"{prefix}City", "string", f"{label} City", 40),
        FieldDef(f"{prefix}State", "string", f"{label} State/Province", 80),
        FieldDef(f"{prefix}PostalCode", "string", f"{label} Zip/Postal Code", 20),
        FieldDef(f"{prefix}Country", "string", f"{label} Country", 80),
    ]


_REGION_FORMULA = (
    'CASE(UPPER(TRIM(BillingCountry)), "US", "AMER", "USA", "AMER", "UNITED STATES", "AMER", '
    '"CA", "AMER", "CANADA", "AMER", "MX", "AMER", "MEXICO", "AMER", "BR", "AMER", "BRAZIL", "AMER", '
    '"JP", "APAC", "JAPAN", "APAC", "AU", "APAC", "AUSTRALIA", "APAC", "SG", "APAC", "SINGAPORE", "APAC", '
    '"IN", "APAC", "INDIA", "APAC", IF(ISBLANK(BillingCountry), null, "EMEA"))'
)
_AMER = {"US", "USA", "UNITED STATES", "CA", "CANADA", "MX", "MEXICO", "BR", "BRAZIL"}
_APAC = {"JP", "JAPAN", "AU", "AUSTRALIA", "SG", "SINGAPORE", "IN", "INDIA"}


def _region(country: Any) -> str | None:
    c = str(country or "").strip().upper()
    if not c:
        return None
    return "AMER" if c in _AMER else "APAC" if c in _APAC else "EMEA"


def build_schema(
    stripe_id_field: str, customer_id_fields: Iterable[str] = ()
) -> dict[str, ObjectDef]:
    """The objects the sandbox org has, with the configurable Stripe customer id field (and
    `customer_id_fields`: more Account text fields, one per billing account that writes back).

    The org has multi-currency on (Order.CurrencyIsoCode) and a Stripe-account record that
    orders look up (Order.Stripe_Account__c -> Stripe_Account__c.Stripe_ID__c), as Stripe's own
    connector sets up several Stripe accounts; Order.Billing_Entity__c is a plain custom field.
    """
    extra_ids = [
        FieldDef(name, "string", name.removesuffix("__c").replace("_", " "), 255, custom=True)
        for name in dict.fromkeys(customer_id_fields)
        if name.casefold() != stripe_id_field.casefold()
    ]
    account = ObjectDef(
        "Account",
        "Account",
        "Accounts",
        "001",
        (
            *_sys("Account"),
            FieldDef(
                "MasterRecordId",
                "reference",
                "Master Record ID",
                18,
                "Account",
                "MasterRecord",
                createable=False,
                updateable=False,
            ),
            FieldDef("Name", "string", "Account Name", 255, nillable=False, required=True),
            FieldDef(
                "Type",
                "picklist",
                "Account Type",
                255,
                picklist=(
                    "Prospect",
                    "Customer - Direct",
                    "Customer - Channel",
                    "Partner",
                    "Other",
                ),
            ),
            FieldDef(
                "ParentId",
                "reference",
                "Parent Account ID",
                18,
                "Account",
                "Parent",
                "ChildAccounts",
            ),
            *_address("Billing", "Billing"),
            *_address("Shipping", "Shipping"),
            FieldDef("Phone", "phone", "Account Phone", 40),
            FieldDef("Website", "url", "Website", 255),
            FieldDef("AccountNumber", "string", "Account Number", 40),
            FieldDef(
                "Industry",
                "picklist",
                "Industry",
                255,
                picklist=(
                    "Technology",
                    "Manufacturing",
                    "Retail",
                    "Healthcare",
                    "Finance",
                    "Education",
                    "Other",
                ),
            ),
            FieldDef("Description", "textarea", "Account Description", 32000),
            *_stamps(),
            FieldDef(stripe_id_field, "string", "Stripe Customer Id", 255, custom=True),
            *extra_ids,
            FieldDef(
                "Region__c",
                "string",
                "Region",
                1300,
                custom=True,
                calculated=True,
                formula=_REGION_FORMULA,
                createable=False,
                updateable=False,
            ),
        ),
        mergeable=True,
    )
    contact = ObjectDef(
        "Contact",
        "Contact",
        "Contacts",
        "003",
        (
            *_sys("Contact"),
            FieldDef(
                "MasterRecordId",
                "reference",
                "Master Record ID",
                18,
                "Contact",
                "MasterRecord",
                createable=False,
                updateable=False,
            ),
            FieldDef("AccountId", "reference", "Account ID", 18, "Account", "Account", "Contacts"),
            FieldDef("LastName", "string", "Last Name", 80, nillable=False, required=True),
            FieldDef("FirstName", "string", "First Name", 40),
            FieldDef(
                "Salutation",
                "picklist",
                "Salutation",
                40,
                picklist=("Mr.", "Ms.", "Mrs.", "Dr.", "Prof."),
            ),
            FieldDef(
                "Name",
                "string",
                "Full Name",
                121,
                createable=False,
                updateable=False,
                nillable=False,
            ),
            FieldDef("Title", "string", "Title", 128),
            FieldDef("Email", "email", "Email", 80),
            FieldDef("Phone", "phone", "Business Phone", 40),
            *_address("Mailing", "Mailing"),
            FieldDef("Description", "textarea", "Contact Description", 32000),
            *_stamps(),
        ),
        mergeable=True,
    )
    quote = ObjectDef(
        "SBQQ__Quote__c",
        "Quote",
        "Quotes",
        "a0X",
        (
            *_sys("Record"),
            FieldDef(
                "Name",
                "string",
                "Quote Number",
                80,
                createable=False,
                updateable=False,
                nillable=False,
                auto_number=True,
            ),
            FieldDef(
                "SBQQ__Account__c",
                "reference",
                "Account",
                18,
                "Account",
                "SBQQ__Account__r",
                "SBQQ__Quotes__r",
                custom=True,
            ),
            FieldDef(
                "SBQQ__PrimaryContact__c",
                "reference",
                "Primary Contact",
                18,
                "Contact",
                "SBQQ__PrimaryContact__r",
                "SBQQ__Quotes__r",
                custom=True,
            ),
            FieldDef("SBQQ__Primary__c", "boolean", "Primary", custom=True, nillable=False),
            FieldDef(
                "SBQQ__Status__c",
                "picklist",
                "Status",
                255,
                custom=True,
                picklist=("Draft", "In Review", "Approved", "Presented", "Accepted", "Rejected"),
            ),
            FieldDef(
                "SBQQ__NetAmount__c", "currency", "Net Amount", custom=True, precision=18, scale=2
            ),
            *_stamps(),
        ),
        custom=True,
    )
    order = ObjectDef(
        "Order",
        "Order",
        "Orders",
        "801",
        (
            *_sys("Order"),
            FieldDef(
                "OrderNumber",
                "string",
                "Order Number",
                30,
                createable=False,
                updateable=False,
                nillable=False,
                auto_number=True,
            ),
            FieldDef("Name", "string", "Order Name", 80),
            FieldDef(
                "AccountId",
                "reference",
                "Account ID",
                18,
                "Account",
                "Account",
                "Orders",
                required=True,
            ),
            FieldDef(
                "Status",
                "picklist",
                "Status",
                40,
                nillable=False,
                required=True,
                picklist=("Draft", "Activated"),
            ),
            FieldDef(
                "StatusCode",
                "picklist",
                "Status Category",
                40,
                createable=False,
                updateable=False,
                nillable=False,
                picklist=("Draft", "Activated"),
            ),
            FieldDef("EffectiveDate", "date", "Order Start Date", nillable=False, required=True),
            FieldDef("EndDate", "date", "Order End Date"),
            FieldDef(
                "ActivatedDate", "datetime", "Activated Date", createable=False, updateable=False
            ),
            FieldDef(
                "BillToContactId",
                "reference",
                "Bill To Contact ID",
                18,
                "Contact",
                "BillToContact",
                "OrdersBillTo",
            ),
            FieldDef(
                "ShipToContactId",
                "reference",
                "Ship To Contact ID",
                18,
                "Contact",
                "ShipToContact",
                "OrdersShipTo",
            ),
            FieldDef(
                "SBQQ__Quote__c",
                "reference",
                "Quote",
                18,
                "SBQQ__Quote__c",
                "SBQQ__Quote__r",
                "SBQQ__Orders__r",
                custom=True,
            ),
            FieldDef(
                "Type", "picklist", "Order Type", 255, picklist=("New", "Renewal", "Amendment")
            ),
            FieldDef("PoNumber", "string", "PO Number", 80),
            FieldDef(
                "TotalAmount",
                "currency",
                "Order Amount",
                createable=False,
                updateable=False,
                precision=18,
                scale=2,
            ),
            FieldDef("Description", "textarea", "Description", 32000),
            *_address("Billing", "Billing"),
            FieldDef(
                "CurrencyIsoCode",
                "picklist",
                "Order Currency",
                3,
                picklist=("USD", "EUR", "GBP", "CAD", "JPY"),
            ),
            FieldDef(
                "Stripe_Account__c",
                "reference",
                "Stripe Account",
                18,
                "Stripe_Account__c",
                "Stripe_Account__r",
                "Orders__r",
                custom=True,
            ),
            FieldDef("Billing_Entity__c", "string", "Billing Entity", 80, custom=True),
            *_stamps(),
        ),
    )
    stripe_account = ObjectDef(
        "Stripe_Account__c",
        "Stripe Account",
        "Stripe Accounts",
        "a0S",
        (
            *_sys("Record"),
            FieldDef("Name", "string", "Stripe Account Name", 80),
            FieldDef("Stripe_ID__c", "string", "Stripe ID", 255, custom=True),
            *_stamps(),
        ),
        custom=True,
    )
    return {o.name: o for o in (account, contact, quote, order, stripe_account)}


class _Catalog:
    """The SOQL evaluator's view of the schema."""

    def __init__(self, schema: dict[str, ObjectDef]) -> None:
        self.schema = schema
        self._lower = {k.lower(): k for k in schema}

    def object_name(self, name: str) -> str | None:
        return self._lower.get(name.lower())

    def field(self, sobject: str, name: str) -> FieldDef | None:
        return self.schema[sobject].field(name)

    def relationship(self, sobject: str, name: str) -> tuple[str, str, str] | None:
        for f in self.schema[sobject].fields:
            if f.relationship_name and f.relationship_name.lower() == name.lower():
                assert f.reference_to is not None
                return f.relationship_name, f.name, f.reference_to
        return None


# --- ids, time ------------------------------------------------------------------------------

_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def id18(id15: str) -> str:
    """Salesforce's case-safe suffix: one character per five, a bit per upper-case letter."""
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, c in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= c <= "Z":
                bits |= 1 << i
        suffix += _ID_SUFFIX[bits]
    return id15 + suffix


def _well_formed(value: Any) -> bool:
    return isinstance(value, str) and len(value) in (15, 18) and value.isascii() and value.isalnum()


def format_datetime(dt: datetime) -> str:
    """REST's datetime form: 2026-01-05T03:41:05.000+0000."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


class LogicalClock:
    """Never goes backwards; every `tick()` is at least one second after the previous one.

    With a fixed `start` it moves only by ticks and `advance()` (deterministic for tests);
    without one it follows the wall clock as well.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._follow_wall = start is None
        base = (start or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        self._offset = base - self._wall()
        # Following the wall clock, a first bulk load may be stamped in the seconds before now.
        self._last = base - timedelta(seconds=1) if start is not None else base - timedelta(days=1)
        self._lock = threading.Lock()

    @staticmethod
    def _wall() -> datetime:
        return datetime.now(UTC).replace(microsecond=0)

    def _candidate(self) -> datetime:
        return self._wall() + self._offset if self._follow_wall else self._last

    def now(self) -> datetime:
        with self._lock:
            return max(self._candidate(), self._last)

    def tick(self) -> datetime:
        with self._lock:
            self._last = max(self._candidate(), self._last + timedelta(seconds=1))
            return self._last

    def ticks(self, n: int) -> list[datetime]:
        """`n` strictly increasing stamps that end about now (a bulk load that just happened)."""
        with self._lock:
            start = max(
                self._last + timedelta(seconds=1), self._candidate() - timedelta(seconds=n - 1)
            )
            out = [start + timedelta(seconds=i) for i in range(n)]
            if out:
                self._last = out[-1]
            return out

    def advance(self, seconds: float) -> None:
        with self._lock:
            delta = timedelta(seconds=max(0.0, seconds))
            self._offset += delta
            self._last += delta

    def observe(self, dt: datetime) -> None:
        """A stamp written from outside (loaded data): later ticks come after it."""
        with self._lock:
            self._last = max(self._last, dt.astimezone(UTC).replace(microsecond=0))


def _version_label(version: str) -> str:
    k = int(float(version)) - 62  # v62.0 is Winter '25
    return f"{['Winter', 'Spring', 'Summer'][k % 3]} '{25 + k // 3}"


# --- errors ---------------------------------------------------------------------------------


class SalesforceSandboxError(ValueError):
    """A write Salesforce would refuse; carries the REST error body."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else "error")
        self.status = status
        self.errors = errors


def _err(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"message": message, "errorCode": code, "fields": fields or []}


def _error_response(
    status: int, code: str, message: str, fields: list[str] | None = None
) -> Response:
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return Response.json([body], status)


_SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
_LIMIT_EXCEEDED = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_MAX_OPEN_LOCATORS = 10  # Salesforce keeps 10 open query cursors per user
_LOCATOR_TTL = 15 * 60  # and closes one after 15 minutes without use
_DEFAULT_USERS = {"admin@example.com": "sandbox-password"}


@dataclass
class _Cursor:
    rows: list[dict[str, Any]]
    batch: int
    touched: float


_BULK_CHUNK = 100  # rows per PK chunk of a sandbox query job (Salesforce's are 100k-250k)


@dataclass
class _BulkJob:
    id: str
    operation: str
    sobject: str
    version: str
    created: str
    rows: list[list[str]]
    columns: list[str]
    locators: dict[str, int]


# --- the server -----------------------------------------------------------------------------


class SalesforceSandbox(SandboxServer):
    """A Salesforce org on 127.0.0.1 with the REST API and a Python API for tests.

    `data` is `{"Account": [...], "Contact": [...], "Order": [...], "SBQQ__Quote__c": [...]}`;
    records may give their `Id` (15 or 18 characters) and refer to each other by it. Logins:
    `users` (username -> password) for the password flow and as JWT subjects, `consumer_key` /
    `consumer_secret` for the connected app, `jwt_public_key` (PEM key or certificate) to verify
    JWT assertions (unverified signatures are accepted when it is None), and the static
    `access_token` for direct use. `clock_start` fixes the clock (deterministic stamps); without
    it SystemModstamp follows the wall clock, still one second or more per change.

    Control API (not counted as API calls), besides the base's faults/latency/rate_limit/stats:
    `time_out_queries()` makes wide SystemModstamp windows answer QUERY_TIMEOUT, as on a large
    org; `soql_received()` lists every SOQL asked; `/query/?explain=` answers a query plan.
    POST /_sandbox/load (body: data), POST /_sandbox/reset, POST /_sandbox/merge
    {"winner", "losers", "keep_from"}, POST /_sandbox/expire_sessions, POST /_sandbox/clock
    {"advance": seconds}, POST /_sandbox/daily_limit {"max", "reset_usage"},
    GET|POST /_sandbox/records/{Object}, PATCH|DELETE /_sandbox/records/{Object}/{id}.
    """

    kind = "salesforce"

    def __init__(
        self,
        data: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        *,
        port: int = 0,
        api_version: str = "62.0",
        stripe_id_field: str = "Stripe_Customer_Id__c",
        customer_id_fields: Iterable[str] = (),
        access_token: str = "sandbox-token",
        daily_api_limit: int = 15000,
        org_id: str = "00D000000000001AAA",
        users: Mapping[str, str] | None = None,
        consumer_key: str = "sandbox-consumer-key",
        consumer_secret: str = "sandbox-consumer-secret",
        jwt_public_key: str | bytes | None = None,
        clock_start: datetime | None = None,
    ) -> None:
        super().__init__(port=port)
        self.api_version = api_version
        self.stripe_id_field = stripe_id_field
        self.access_token = access_token
        self.daily_api_limit = daily_api_limit
        self.org_id = org_id
        self.users = dict(users if users is not None else _DEFAULT_USERS)
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.jwt_public_key = _load_public_key(jwt_public_key) if jwt_public_key else None
        self.schema = build_schema(stripe_id_field, customer_id_fields)
        self.catalog = _Catalog(self.schema)
        self.clock = LogicalClock(clock_start)
        self._initial = copy.deepcopy(dict(data)) if data else {}
        self._records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self._counters: dict[str, itertools.count[int]] = {}
        self._auto_numbers: dict[str, itertools.count[int]] = {}
        self._tokens: set[str] = {access_token}
        self._api_used = 0
        self._rng = random.Random(org_id)
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._jobs: dict[str, _BulkJob] = {}
        self._soql_log: list[str] = []
        self._timeouts: list[QueryTimeouts] = []
        self._record_failures: dict[str, list[Any]] = {}  # 15-char id -> [errorCode, message, times left]
        self._signing_key = secrets.token_bytes(32)
        with self.lock:
            self._reset_counters()
            if self._initial:
                self._load(self._initial)
        self._routes_salesforce()

    # --- Python API: data ----------------------------------------------------------------

    def start(self) -> SalesforceSandbox:
        super().start()
        return self

    def __enter__(self) -> SalesforceSandbox:
        return self.start() if self._httpd is None else self

    def load(
        self, data: Mapping[str, Iterable[Mapping[str, Any]]], *, replace: bool = True
    ) -> None:
        """Put `data` ({"Account": [...], ...}) in the org, replacing what is there unless asked."""
        with self.lock:
            if replace:
                self._clear()
            self._load(data)

    def reset(self) -> None:
        """Back to the data given at construction (empty if none). The clock keeps going forward."""
        with self.lock:
            self._clear()
            if self._initial:
                self._load(self._initial)

    def create(self, sobject: str, fields: Mapping[str, Any]) -> str:
        """Create a record as an admin would (read-only fields such as TotalAmount allowed)."""
        with self.lock:
            obj = self._object(sobject)
            self._check_known(obj, fields)
            return self._insert(obj, fields)

    def update(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> None:
        with self.lock:
            obj = self._object(sobject)
            self._check_known(obj, fields)
            managed = sorted({self._field(obj, k).name for k in fields} & _ORG_MANAGED)
            if managed:
                raise ValueError(
                    f"{', '.join(managed)} cannot be updated: the org sets them "
                    "(use delete(), undelete(), merge() or advance_clock())"
                )
            rec = self._require(obj, record_id)
            self._apply(obj, rec, fields)

    def delete(self, sobject: str, record_id: str) -> None:
        with self.lock:
            obj = self._object(sobject)
            rec = self._require(obj, record_id)
            if rec["IsDeleted"]:
                raise ValueError(f"{obj.name} {record_id} is already deleted")
            rec["IsDeleted"] = True
            self._touch(obj, rec)

    def undelete(self, sobject: str, record_id: str) -> None:
        with self.lock:
            obj = self._object(sobject)
            rec = self._require(obj, record_id)
            if not rec["IsDeleted"]:
                raise ValueError(f"{obj.name} {record_id} is not deleted")
            rec["IsDeleted"] = False
            rec["MasterRecordId"] = None
            self._touch(obj, rec)

    def get(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """A copy of the record with every field, deleted ones included; None if unknown."""
        with self.lock:
            rec = self._find(self._object(sobject), record_id)
            return dict(rec) if rec is not None else None

    def records(self, sobject: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            obj = self._object(sobject)
            return [
                dict(r)
                for r in self._records[obj.name].values()
                if include_deleted or not r["IsDeleted"]
            ]

    def merge(
        self,
        winner_id: str,
        loser_ids: Iterable[str],
        *,
        keep_from: Mapping[str, str] | None = None,
    ) -> None:
        """Merge like Salesforce: losers deleted with MasterRecordId, their children re-parented.

        `keep_from` maps a field to the loser whose value the winner keeps. Salesforce merges at
        most three records at once (the winner and two losers).
        """
        losers = list(loser_ids)
        with self.lock:
            obj = self._object_for_id(winner_id)
            if not obj.mergeable:
                raise ValueError(f"{obj.name} records cannot be merged")
            if not 1 <= len(losers) <= 2:
                raise ValueError("a merge takes one winner and one or two losers")
            winner = self._require(obj, winner_id)
            if winner["IsDeleted"]:
                raise ValueError(f"the winner {winner_id} is deleted")
            loser_recs = []
            for lid in losers:
                rec = self._require(obj, lid)
                if rec["Id"] == winner["Id"]:
                    raise ValueError("the winner cannot also be a loser")
                if rec["IsDeleted"]:
                    raise ValueError(f"the loser {lid} is already deleted")
                loser_recs.append(rec)
            by_key = {r["Id"][:15]: r for r in loser_recs}
            kept: dict[str, Any] = {}
            for fname, lid in (keep_from or {}).items():
                f = obj.field(fname)
                if f is None or f.name in _SYSTEM or f.name == "Id" or f.calculated:
                    raise ValueError(f"cannot keep {fname!r} from a loser")
                src = by_key.get(str(lid)[:15])
                if src is None:
                    raise ValueError(f"keep_from names {lid}, which is not a loser")
                kept[f.name] = src[f.name]
            loser_keys = set(by_key)
            for rec in loser_recs:
                rec["IsDeleted"] = True
                rec["MasterRecordId"] = winner["Id"]
                self._touch(obj, rec)
            for child_obj in self.schema.values():
                refs = [
                    f
                    for f in child_obj.fields
                    if f.reference_to == obj.name and f.name != "MasterRecordId"
                ]
                for child in self._records[child_obj.name].values():
                    changed = False
                    for f in refs:
                        if child[f.name] and child[f.name][:15] in loser_keys:
                            child[f.name] = winner["Id"]
                            changed = True
                    if changed:
                        self._touch(child_obj, child)
            winner.update(kept)
            self._touch(obj, winner)

    # --- Python API: sessions, limits, clock ---------------------------------------------------

    def expire_sessions(self) -> None:
        """Every token issued so far, the static `access_token` included, answers 401 from now."""
        with self.lock:
            self._tokens.clear()

    def accept_token(self, token: str) -> None:
        """Make `token` valid again (e.g. the static `access_token` after `expire_sessions()`)."""
        with self.lock:
            self._tokens.add(token)

    def issue_token(self) -> str:
        """A fresh valid session token, as a login would give."""
        token = f"{self.org_id[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self.lock:
            self._tokens.add(token)
        return token

    @property
    def api_calls_used(self) -> int:
        return self._api_used

    @property
    def api_calls_remaining(self) -> int:
        return max(0, self.daily_api_limit - self._api_used)

    def set_daily_limit(self, n: int) -> None:
        self.daily_api_limit = int(n)

    def reset_api_usage(self) -> None:
        """A new day: the allowance is whole again."""
        self._api_used = 0

    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def now(self) -> str:
        """The org's current time in REST's form."""
        return format_datetime(self.clock.now())

    def time_out_queries(
        self, sobject: str, *, wider_than: float, status: int = 400, times: int = 1_000_000
    ) -> QueryTimeouts:
        """Queries of `sobject` whose SystemModstamp window is wider than `wider_than` seconds
        (or open at one end) answer Salesforce's QUERY_TIMEOUT, `times` times: a large org."""
        t = QueryTimeouts(sobject, timedelta(seconds=wider_than), status, times)
        with self.lock:
            self._timeouts.append(t)
        return t

    def soql_received(self) -> list[str]:
        """Every SOQL the org was asked through REST query or a Bulk API 2.0 query job."""
        with self.lock:
            return list(self._soql_log)

    def expire_query_locators(self) -> None:
        with self.lock:
            self._cursors.clear()

    def fail_record_updates(self, record_id: str, code: str = "UNABLE_TO_LOCK_ROW",
                            message: str = "unable to obtain exclusive access to this record", *, times: int = 1) -> None:
        """The next `times` sObject Collection updates of `record_id` fail for that record only.

        The rest of the call is applied, and the answer is the mixed SaveResult list Salesforce
        gives with allOrNone=false (or a rollback of every record with allOrNone=true): a row
        lock held by another transaction, a validation rule, a trigger's error.
        """
        with self.lock:
            self._record_failures[str(record_id)[:15]] = [code, message, int(times)]

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["api_usage"] = {"used": self._api_used, "max": self.daily_api_limit}
        out["records"] = {name: len(recs) for name, recs in self._records.items()}
        return out

    # --- store internals ---------------------------------------------------------------------

    def _reset_counters(self) -> None:
        for name in self.schema:
            self._counters.setdefault(name, itertools.count(1))
        self._auto_numbers.setdefault("Order", itertools.count(100))
        self._auto_numbers.setdefault("SBQQ__Quote__c", itertools.count(1))

    def _clear(self) -> None:
        for recs in self._records.values():
            recs.clear()
        self._cursors.clear()
        self._jobs.clear()

    def _object(self, sobject: str) -> ObjectDef:
        name = self.catalog.object_name(sobject)
        if name is None:
            raise ValueError(
                f"unknown sObject {sobject!r}; the sandbox has {', '.join(self.schema)}"
            )
        return self.schema[name]

    def _object_for_id(self, record_id: str) -> ObjectDef:
        for obj in self.schema.values():
            if str(record_id).startswith(obj.key_prefix):
                return obj
        raise ValueError(f"no object has the key prefix of {record_id!r}")

    def _check_known(self, obj: ObjectDef, fields: Mapping[str, Any]) -> None:
        for k in fields:
            if obj.field(k) is None:
                raise ValueError(f"No such column '{k}' on sobject of type {obj.name}")

    def _field(self, obj: ObjectDef, name: str) -> FieldDef:
        f = obj.field(name)
        if f is None:
            raise ValueError(f"No such column '{name}' on sobject of type {obj.name}")
        return f

    def _find(self, obj: ObjectDef, record_id: Any) -> dict[str, Any] | None:
        if not _well_formed(record_id):
            return None
        return self._records[obj.name].get(str(record_id)[:15])

    def _require(self, obj: ObjectDef, record_id: str) -> dict[str, Any]:
        rec = self._find(obj, record_id)
        if rec is None:
            raise ValueError(f"no {obj.name} with Id {record_id!r}")
        return rec

    def _new_id(self, obj: ObjectDef) -> str:
        n = next(self._counters[obj.name])
        digits = ""
        while True:
            n, r = divmod(n, 62)
            digits = _BASE62[r] + digits
            if n == 0:
                break
        return id18(obj.key_prefix + "Hs" + digits.rjust(10, "0"))

    def _lookup(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        # A parent that is deleted reads as an empty lookup, as Salesforce clears such lookups.
        rec = self._records[sobject].get(str(record_id)[:15]) if record_id else None
        return rec if rec is not None and not rec["IsDeleted"] else None

    def _load(self, data: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
        unknown = [k for k in data if self.catalog.object_name(k) is None]
        if unknown:
            raise ValueError(f"unknown sObject(s) in data: {', '.join(unknown)}")
        batches = []
        for sobject, rows in data.items():
            obj = self._object(sobject)
            for row in rows or []:
                self._check_known(obj, row)
                batches.append((obj, row))
        unstamped = sum(1 for _, row in batches if not any(k in row for k in _STAMP_FIELDS))
        stamps = iter(self.clock.ticks(unstamped))
        for obj, row in batches:
            given = any(k in row for k in _STAMP_FIELDS)
            self._insert(
                obj, row, loading=True, stamp=None if given else format_datetime(next(stamps))
            )

    def _insert(
        self,
        obj: ObjectDef,
        fields: Mapping[str, Any],
        *,
        loading: bool = False,
        stamp: str | None = None,
    ) -> str:
        defs = {f.name: f for f in (self._field(obj, k) for k in fields)}
        given = {self._field(obj, k).name: v for k, v in fields.items()}
        rid = given.pop("Id", None)
        if rid is None:
            rid = self._new_id(obj)
        else:
            if not _well_formed(rid) or not str(rid).startswith(obj.key_prefix):
                raise ValueError(
                    f"{obj.name} Id {rid!r} is not an 18-character id starting with {obj.key_prefix}"
                )
            rid = id18(rid) if len(rid) == 15 else rid
            if rid[:15] in self._records[obj.name]:
                raise ValueError(f"duplicate {obj.name} Id {rid}")
        rec: dict[str, Any] = {f.name: None for f in obj.fields}
        rec["Id"] = rid
        rec["IsDeleted"] = False
        if obj.field("SBQQ__Primary__c"):
            rec["SBQQ__Primary__c"] = False
        stamps = {k: given.pop(k) for k in _STAMP_FIELDS if k in given}
        for k, v in given.items():
            rec[k] = self._normalize(defs[k], v)
        if obj.name in self._auto_numbers and rec.get(_auto_field(obj)) is None:
            n = next(self._auto_numbers[obj.name])
            rec[_auto_field(obj)] = f"{n:08d}" if obj.name == "Order" else f"Q-{n:05d}"
        self._records[obj.name][rid[:15]] = rec
        if loading and stamps:
            created = (
                stamps.get("CreatedDate")
                or stamps.get("SystemModstamp")
                or stamps.get("LastModifiedDate")
            )
            modified = stamps.get("SystemModstamp") or stamps.get("LastModifiedDate") or created
            rec["CreatedDate"] = self._normalize_dt(created)
            rec["LastModifiedDate"] = self._normalize_dt(stamps.get("LastModifiedDate") or modified)
            rec["SystemModstamp"] = self._normalize_dt(modified)
            self.clock.observe(parse_datetime(rec["SystemModstamp"]))
            self._derive(obj, rec, previous_status=None, stamp=rec["SystemModstamp"])
        else:
            stamp = stamp or format_datetime(self.clock.tick())
            rec["CreatedDate"] = stamp
            rec["LastModifiedDate"] = stamp
            rec["SystemModstamp"] = stamp
            self._derive(obj, rec, previous_status=None, stamp=stamp)
        return str(rid)

    def _apply(self, obj: ObjectDef, rec: dict[str, Any], fields: Mapping[str, Any]) -> None:
        previous = rec.get("Status")
        for k, v in fields.items():
            f = obj.field(k)
            assert f is not None
            if f.name in _ORG_MANAGED:
                continue
            rec[f.name] = self._normalize(f, v)
        stamp = self._touch(obj, rec)
        self._derive(obj, rec, previous_status=previous, stamp=stamp)

    def _touch(self, obj: ObjectDef, rec: dict[str, Any]) -> str:
        stamp = format_datetime(self.clock.tick())
        rec["SystemModstamp"] = stamp
        rec["LastModifiedDate"] = stamp
        return stamp

    def _derive(
        self, obj: ObjectDef, rec: dict[str, Any], *, previous_status: Any, stamp: str
    ) -> None:
        """Fields Salesforce computes: Contact.Name, Order.StatusCode/ActivatedDate, formulas."""
        if obj.name == "Contact":
            rec["Name"] = (
                " ".join(p for p in (rec.get("FirstName"), rec.get("LastName")) if p) or None
            )
        elif obj.name == "Order":
            activated = rec.get("Status") == "Activated"
            rec["StatusCode"] = "Activated" if activated else "Draft"
            if activated and previous_status != "Activated" and not rec.get("ActivatedDate"):
                rec["ActivatedDate"] = stamp
            if not activated:
                rec["ActivatedDate"] = None
        elif obj.name == "Account":
            rec["Region__c"] = _region(rec.get("BillingCountry"))

    def _normalize(self, f: FieldDef, value: Any) -> Any:
        if value is None:
            return None
        if value == "" and f.type in _TEXT_TYPES:
            return None  # Salesforce stores a blank text value as null
        if f.type == "datetime":
            return self._normalize_dt(value)
        if f.type == "date":
            if isinstance(value, datetime):
                return value.date().isoformat()
            if isinstance(value, date):
                return value.isoformat()
            return date.fromisoformat(str(value)[:10]).isoformat()
        if f.type in ("double", "currency", "percent"):
            return float(value)
        if f.type == "reference" and isinstance(value, str) and len(value) == 15:
            return id18(value)
        return value

    @staticmethod
    def _normalize_dt(value: Any) -> str:
        if isinstance(value, datetime):
            return format_datetime(value if value.tzinfo else value.replace(tzinfo=UTC))
        if isinstance(value, date):
            return format_datetime(datetime(value.year, value.month, value.day, tzinfo=UTC))
        return format_datetime(parse_datetime(str(value)))

    # --- REST validation -----------------------------------------------------------------------

    def _validate(
        self, obj: ObjectDef, fields: Mapping[str, Any], *, creating: bool
    ) -> list[dict[str, Any]]:
        """What Salesforce would refuse in a create or update body, as error objects."""
        errors: list[dict[str, Any]] = []
        readonly: list[str] = []
        for k, v in fields.items():
            if k == "attributes":
                continue
            f = obj.field(k)
            if f is None:
                errors.append(
                    _err("INVALID_FIELD", f"No such column '{k}' on sobject of type {obj.name}")
                )
                continue
            if (creating and not f.createable) or (not creating and not f.updateable):
                readonly.append(f.name)
                continue
            problem = self._check_value(f, v)
            if problem:
                errors.append(problem)
        if readonly:
            errors.append(
                _err(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {', '.join(readonly)}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile or permission set.",
                    readonly,
                )
            )
        known = {k: obj.field(k) for k in fields if k != "attributes"}
        given = {f.name: fields[k] for k, f in known.items() if f is not None}
        missing = [
            f.name
            for f in obj.fields
            if f.required
            and (given.get(f.name) in (None, "") if (creating or f.name in given) else False)
        ]
        if missing:
            errors.append(
                _err(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
            )
        return errors

    def _check_value(self, f: FieldDef, v: Any) -> dict[str, Any] | None:
        if v is None:
            return None
        bad = _err(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {f.type} from value {v!r} for field {f.name}",
            [f.name],
        )
        if f.type in ("string", "textarea", "picklist", "phone", "email", "url"):
            if not isinstance(v, str):
                return bad
            if f.length and len(v) > f.length:
                return _err(
                    "STRING_TOO_LONG",
                    f"{f.label}: data value too large: {v[:40]} (max length={f.length})",
                    [f.name],
                )
            if f.type == "email" and v and not _EMAIL.match(v):
                return _err(
                    "INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {v}", [f.name]
                )
            if f.picklist and f.name in ("Status",) and v not in f.picklist:
                return _err(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{f.label}: bad value for restricted picklist field: {v}",
                    [f.name],
                )
        elif f.type == "boolean":
            if not isinstance(v, bool):
                return bad
        elif f.type in ("double", "currency", "percent", "int"):
            if isinstance(v, bool) or not isinstance(v, int | float):
                return bad
        elif f.type in ("date", "datetime"):
            try:
                self._normalize(f, v)
            except (TypeError, ValueError):
                return bad
        elif f.type == "reference":
            target = self.schema[f.reference_to] if f.reference_to else None
            if not _well_formed(v) or (target and not str(v).startswith(target.key_prefix)):
                return _err("MALFORMED_ID", f"{f.label}: id value of incorrect type: {v}", [f.name])
            if target and self._lookup(target.name, str(v)) is None:
                return _err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [f.name])
        return None

    # --- HTTP: plumbing ------------------------------------------------------------------------

    def _routes_salesforce(self) -> None:
        v = r"/services/data/v(?P<version>\d+\.\d)"
        r = self.route
        r("GET", r"/services/data", self._versions)
        r("GET", v, self._resources)
        r("GET", v + r"/query", lambda req: self._query(req, include_deleted=False))
        r("GET", v + r"/queryAll", lambda req: self._query(req, include_deleted=True))
        r("GET", v + r"/(?:query|queryAll)/(?P<locator>[^/]+)", self._query_more)
        r("GET", v + r"/limits", self._limits)
        r("GET", v + r"/sobjects", self._global_describe)
        r("GET", v + r"/sobjects/(?P<obj>\w+)/describe", self._describe)
        r("GET", v + r"/sobjects/(?P<obj>\w+)/(?P<kind>deleted|updated)", self._replication)
        r("GET", v + r"/sobjects/(?P<obj>\w+)", self._object_info)
        r("POST", v + r"/sobjects/(?P<obj>\w+)", self._rest_create)
        r("GET", v + r"/sobjects/(?P<obj>\w+)/(?P<id>[^/]+)", self._rest_get)
        r("PATCH", v + r"/sobjects/(?P<obj>\w+)/(?P<id>[^/]+)", self._rest_update)
        r("DELETE", v + r"/sobjects/(?P<obj>\w+)/(?P<id>[^/]+)", self._rest_delete)
        r("POST", v + r"/composite", self._composite)
        r("PATCH", v + r"/composite/sobjects", self._collection_update)
        r("POST", v + r"/composite/sobjects", self._collection_create)
        r("DELETE", v + r"/composite/sobjects", self._collection_delete)
        r("POST", v + r"/jobs/query", self._bulk_create)
        r("GET", v + r"/jobs/query", self._bulk_list)
        r("GET", v + r"/jobs/query/(?P<job>[^/]+)", self._bulk_info)
        r("PATCH", v + r"/jobs/query/(?P<job>[^/]+)", self._bulk_abort)
        r("DELETE", v + r"/jobs/query/(?P<job>[^/]+)", self._bulk_delete)
        r("GET", v + r"/jobs/query/(?P<job>[^/]+)/results", self._bulk_results)
        r("POST", r"/services/oauth2/token", self._oauth_token)
        r("POST", r"/_sandbox/load", self._ctl_load)
        r("POST", r"/_sandbox/reset", self._ctl_reset)
        r("POST", r"/_sandbox/merge", self._ctl_merge)
        r("POST", r"/_sandbox/expire_sessions", self._ctl_expire)
        r("POST", r"/_sandbox/clock", self._ctl_clock)
        r("POST", r"/_sandbox/daily_limit", self._ctl_daily_limit)
        r("GET", r"/_sandbox/records/(?P<obj>\w+)", self._ctl_list)
        r("POST", r"/_sandbox/records/(?P<obj>\w+)", self._ctl_create)
        r("PATCH", r"/_sandbox/records/(?P<obj>\w+)/(?P<id>\w+)", self._ctl_update)
        r("DELETE", r"/_sandbox/records/(?P<obj>\w+)/(?P<id>\w+)", self._ctl_delete)

    @staticmethod
    def _is_rest(req: Request) -> bool:
        return req.path.startswith("/services/data/") and req.path.rstrip("/") != "/services/data"

    def counts_as_call(self, req: Request) -> bool:
        return self._is_rest(req)

    def dispatch(self, req: Request) -> Response:
        with self.lock:
            if self._is_rest(req):
                if req.path.startswith("/services/data/latest"):
                    req.path = req.path.replace(
                        "/services/data/latest", f"/services/data/v{self.api_version}", 1
                    )
                if not self._authorized(req):
                    return Response.json(_SESSION_EXPIRED, 401)
                if self._api_used >= self.daily_api_limit:
                    return Response.json(_LIMIT_EXCEEDED, 403)
                self._api_used += 1
                m = re.match(r"/services/data/v(\d+\.\d)", req.path)
                if not m or float(m.group(1)) > float(self.api_version) or float(m.group(1)) < 20:
                    return self.not_found(req)
            return super().dispatch(req)

    def _authorized(self, req: Request) -> bool:
        auth = req.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        return scheme.lower() in ("bearer", "oauth") and token.strip() in self._tokens

    def decorate(self, req: Request, resp: Response) -> Response:
        if self._is_rest(req):
            resp.headers["Sforce-Limit-Info"] = f"api-usage={self._api_used}/{self.daily_api_limit}"
        # Salesforce's Date header tells clients its clock; here it is the logical clock that
        # stamps SystemModstamp, so advancing it moves both.
        resp.headers["Date"] = formatdate(self.clock.now().timestamp(), usegmt=True)
        return resp

    def not_found(self, req: Request) -> Response:
        return Response.json(
            [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], 404
        )

    def method_not_allowed(self, req: Request) -> Response:
        allowed = sorted({m for m, p, _ in self._routes if p.fullmatch(req.path)})
        return Response.json(
            [
                {
                    "errorCode": "METHOD_NOT_ALLOWED",
                    "message": f"HTTP Method '{req.method}' not allowed. Allowed are {','.join(allowed)}",
                }
            ],
            405,
        )

    def rate_limited_response(self, req: Request) -> Response:
        return Response.json(
            [
                {
                    "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                    "errorCode": "REQUEST_LIMIT_EXCEEDED",
                }
            ],
            403,
        )

    def _url_for(self, version: str) -> Any:
        return lambda sobject, rid: f"/services/data/v{version}/sobjects/{sobject}/{rid}"

    def _rest_object(self, req: Request) -> ObjectDef | None:
        name = self.catalog.object_name(req.params["obj"])
        return self.schema[name] if name else None

    def _body(self, req: Request) -> Any:
        try:
            return req.json()
        except (ValueError, UnicodeDecodeError):
            return _BadJson

    # --- HTTP: discovery, limits, describe ------------------------------------------------------

    def _versions(self, req: Request) -> Response:
        top = int(float(self.api_version))
        return Response.json(
            [
                {
                    "label": _version_label(f"{n}.0"),
                    "url": f"/services/data/v{n}.0",
                    "version": f"{n}.0",
                }
                for n in range(31, top + 1)
            ]
        )

    def _resources(self, req: Request) -> Response:
        base = f"/services/data/v{req.params['version']}"
        names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs"]
        return Response.json({n: f"{base}/{n}" for n in names})

    def _limits(self, req: Request) -> Response:
        def entry(mx: int, remaining: int) -> dict[str, int]:
            return {"Max": mx, "Remaining": remaining}

        return Response.json(
            {
                "DailyApiRequests": entry(self.daily_api_limit, self.api_calls_remaining),
                "DailyBulkV2QueryJobs": entry(10000, 10000 - len(self._jobs)),
                "DailyBulkV2QueryFileStorageMB": entry(976562, 976562),
                "DataStorageMB": entry(5, 5),
                "FileStorageMB": entry(20, 20),
                "ConcurrentAsyncGetReportInstances": entry(200, 200),
            }
        )

    def _sobject_summary(self, obj: ObjectDef, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{obj.name}"
        return {
            "name": obj.name,
            "label": obj.label,
            "labelPlural": obj.label_plural,
            "keyPrefix": obj.key_prefix,
            "custom": obj.custom,
            "customSetting": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "searchable": True,
            "retrieveable": True,
            "undeletable": True,
            "mergeable": obj.mergeable,
            "replicateable": True,
            "triggerable": True,
            "layoutable": True,
            "feedEnabled": False,
            "activateable": False,
            "compactLayoutable": True,
            "deprecatedAndHidden": False,
            "hasSubtypes": False,
            "isSubtype": False,
            "mruEnabled": True,
            "isInterface": False,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def _global_describe(self, req: Request) -> Response:
        version = req.params["version"]
        return Response.json(
            {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [self._sobject_summary(o, version) for o in self.schema.values()],
            }
        )

    def _object_info(self, req: Request) -> Response:
        obj = self._rest_object(req)
        if obj is None:
            return self.not_found(req)
        return Response.json(
            {"objectDescribe": self._sobject_summary(obj, req.params["version"]), "recentItems": []}
        )

    def _describe(self, req: Request) -> Response:
        obj = self._rest_object(req)
        if obj is None:
            return self.not_found(req)
        version = req.params["version"]
        out = self._sobject_summary(obj, version)
        base = f"/services/data/v{version}/sobjects/{obj.name}"
        out["urls"].update(
            {
                "uiDetailTemplate": "https://sandbox.invalid/{ID}",
                "uiEditTemplate": "https://sandbox.invalid/{ID}/e",
                "uiNewRecord": f"https://sandbox.invalid/{obj.key_prefix}/e",
                "layouts": f"{base}/describe/layouts",
                "compactLayouts": f"{base}/describe/compactLayouts",
                "approvalLayouts": f"{base}/describe/approvalLayouts",
                "listviews": f"{base}/listviews",
                "quickActions": f"{base}/quickActions",
                "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
            }
        )
        children = []
        for child in self.schema.values():
            for f in child.fields:
                if f.reference_to == obj.name and f.child_relationship:
                    children.append(
                        {
                            "childSObject": child.name,
                            "field": f.name,
                            "relationshipName": f.child_relationship,
                            "cascadeDelete": False,
                            "restrictedDelete": False,
                            "deprecatedAndHidden": False,
                            "junctionIdListNames": [],
                            "junctionReferenceTo": [],
                        }
                    )
        out.update(
            {
                "fields": [f.describe() for f in obj.fields],
                "childRelationships": children,
                "recordTypeInfos": [
                    {
                        "active": True,
                        "available": True,
                        "defaultRecordTypeMapping": True,
                        "developerName": "Master",
                        "master": True,
                        "name": "Master",
                        "recordTypeId": "012000000000000AAA",
                        "urls": {"layout": f"{base}/describe/layouts/012000000000000AAA"},
                    }
                ],
                "namedLayoutInfos": [],
                "supportedScopes": [{"label": "All", "name": "everything"}],
                "actionOverrides": [],
                "networkScopeFieldName": None,
                "listviewable": None,
                "lookupLayoutable": None,
                "searchLayoutable": True,
                "sobjectDescribeOption": "FULL",
                "associateEntityType": None,
                "associateParentEntity": None,
                "defaultImplementation": None,
                "extendedBy": None,
                "extendsInterfaces": None,
                "implementedBy": None,
                "implementsInterfaces": None,
                "dataTranslationEnabled": False,
            }
        )
        return Response.json(out)

    def _replication(self, req: Request) -> Response:
        """`sobjects/X/deleted` and `sobjects/X/updated`: ids changed between start and end."""
        obj = self._rest_object(req)
        if obj is None:
            return self.not_found(req)
        try:
            start = parse_datetime(req.query_one("start") or "")
            end = parse_datetime(req.query_one("end") or "")
        except ValueError:
            return _error_response(
                400, "INVALID_REPLICATION_DATE", "start and end must be ISO 8601 date-times"
            )
        if end < start:
            return _error_response(
                400, "INVALID_REPLICATION_DATE", "start date must be earlier than end date"
            )
        covered = min(end, self.clock.now()).replace(second=0)
        rows = [
            r
            for r in self._records[obj.name].values()
            if start <= parse_datetime(r["SystemModstamp"]) <= end
        ]
        if req.params["kind"] == "updated":
            ids = [r["Id"] for r in rows if not r["IsDeleted"]]
            return Response.json({"ids": ids, "latestDateCovered": format_datetime(covered)})
        deleted = [
            {"id": r["Id"], "deletedDate": r["SystemModstamp"]} for r in rows if r["IsDeleted"]
        ]
        earliest = min((d["deletedDate"] for d in deleted), default=format_datetime(start))
        return Response.json(
            {
                "deletedRecords": deleted,
                "earliestDateAvailable": earliest,
                "latestDateCovered": format_datetime(covered),
            }
        )

    # --- HTTP: query ---------------------------------------------------------------------------

    def run_query(
        self, soql: str, *, include_deleted: bool = False, version: str | None = None
    ) -> list[dict[str, Any]]:
        """All rows of `soql` shaped as REST returns them (no paging, no API call counted)."""
        with self.lock:
            cq = compile_query(soql, self.catalog)
            return self._shaped(cq, include_deleted, version or self.api_version)

    def _shaped(self, cq: Any, include_deleted: bool, version: str) -> list[dict[str, Any]]:
        records = (
            r for r in self._records[cq.sobject].values() if include_deleted or not r["IsDeleted"]
        )
        rows = cq.run(records, self._lookup)
        url_for = self._url_for(version)
        return [cq.shape(r, self._lookup, url_for) for r in rows]

    def _query(self, req: Request, *, include_deleted: bool) -> Response:
        explained = req.query_one("explain")
        if explained:
            return self._explain(explained)
        q = req.query_one("q")
        if not q:
            return _error_response(400, "MALFORMED_QUERY", "A query string has to be specified")
        version = req.params["version"]
        try:
            cq = compile_query(q, self.catalog)
        except SoqlError as exc:
            return _error_response(400, exc.error_code, exc.message(q))
        self._soql_log.append(q)
        timeout = self._timed_out(q)
        if timeout is not None:
            return timeout
        rows = self._shaped(cq, include_deleted, version)
        return self._page(rows, self._batch_size(req), version, None, 0)

    @staticmethod
    def _batch_size(req: Request) -> int:
        options = req.header("Sforce-Query-Options") or ""
        for part in options.split(","):
            key, _, value = part.partition("=")
            if key.strip().lower() == "batchsize" and value.strip().isdigit():
                return min(2000, max(200, int(value.strip())))
        return 2000

    def _page(
        self, rows: list[dict[str, Any]], batch: int, version: str, locator: str | None, offset: int
    ) -> Response:
        page = rows[offset : offset + batch]
        end = offset + len(page)
        body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
        if end < len(rows):
            if locator is None:
                locator = "01g" + "".join(self._rng.choice(_BASE62) for _ in range(12))
                locator = id18(locator)
                self._cursors[locator] = _Cursor(rows, batch, time.monotonic())
                while len(self._cursors) > _MAX_OPEN_LOCATORS:
                    self._cursors.popitem(last=False)
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        elif locator is not None:
            self._cursors.pop(locator, None)
        body["records"] = page
        return Response.json(body)

    def _query_more(self, req: Request) -> Response:
        loc, _, offset_text = req.params["locator"].rpartition("-")
        now = time.monotonic()
        for key in [k for k, c in self._cursors.items() if now - c.touched > _LOCATOR_TTL]:
            del self._cursors[key]
        cursor = self._cursors.get(loc)
        if (
            cursor is None
            or not offset_text.isdigit()
            or not 0 < int(offset_text) < len(cursor.rows)
        ):
            return _error_response(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        cursor.touched = now
        self._cursors.move_to_end(loc)
        return self._page(cursor.rows, cursor.batch, req.params["version"], loc, int(offset_text))

    def _timed_out(self, q: str) -> Response | None:
        parsed = parse_soql(q)
        for t in self._timeouts:
            if t.applies(parsed):
                t.times -= 1
                t.hits += 1
                return _error_response(
                    t.status, "QUERY_TIMEOUT", "Your query request was running for too long."
                )
        return None

    def _explain(self, q: str) -> Response:
        try:
            compile_query(q, self.catalog)
            parsed = parse_soql(q)
        except SoqlError as exc:
            return _error_response(400, exc.error_code, exc.message(q))
        obj = self.schema[self.catalog.object_name(parsed.sobject) or parsed.sobject]
        indexed = INDEXED | {
            f.name.casefold() for f in obj.fields if f.type == "reference"
        }
        body = explain_plan(parsed, obj.name, indexed, len(self._records[obj.name]))
        body["sourceQuery"] = q
        return Response.json(body)

    # --- HTTP: sObject rows ----------------------------------------------------------------------

    def _live_record(self, req: Request, obj: ObjectDef) -> dict[str, Any] | Response:
        """The record the URL names, or Salesforce's answer when it is missing or deleted."""
        rec = self._find(obj, req.params["id"])
        if rec is None:
            return self.not_found(req)
        if rec["IsDeleted"]:
            return _error_response(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return rec

    def _rest_get(self, req: Request) -> Response:
        obj = self._rest_object(req)
        if obj is None:
            return self.not_found(req)
        rec = self._live_record(req, obj)
        if isinstance(rec, Response):
            return rec
        wanted = req.query_one("fields")
        names = [f.name for f in obj.fields]
        if wanted:
            names = []
            for w in wanted.split(","):
                f = obj.field(w.strip())
                if f is None:
                    return _error_response(
                        400,
                        "INVALID_FIELD",
                        f"No such column '{w.strip()}' on sobject of type {obj.name}",
                    )
                names.append(f.name)
        out: dict[str, Any] = {
            "attributes": {
                "type": obj.name,
                "url": self._url_for(req.params["version"])(obj.name, rec["Id"]),
            }
        }
        out.update({n: rec[n] for n in names})
        return Response.json(out)

    def _rest_create(self, req: Request) -> Response:
        obj = self._rest_object(req)
        if obj is None:
            return self.not_found(req)
        body = self._body(req)
        if not isinstance(body, dict):
            return _error_response(
                400, "JSON_PARSER_ERROR", "The request body must be a JSON object"
            )
        errors = self._validate(obj, body, creating=True)
        if errors:
            return Response.json(errors, 400)
        rid = self._insert(obj, {k: v for k, v in body.items() if k != "attributes"})
        return Response.json({"id": rid, "success": True, "errors": []}, 201)

    def _rest_update(self, req: Request) -> Response:
        obj = self._rest_object(req)
        if obj is None:
            return self.not_found(req)
        body = self._body(req)
        if not isinstance(body, dict):
            return _error_response(
                400, "JSON_PARSER_ERROR", "The request body must be a JSON object"
            )
        rec = self._live_record(req, obj)
        if isinstance(rec, Response):
            return rec
        errors = self._validate(obj, body, creating=False)
        if errors:
            return Response.json(errors, 400)
        self._apply(obj, rec, {k: v for k, v in body.items() if k != "attributes"})
        return Response.empty(204)

    def _rest_delete(self, req: Request) -> Response:
        obj = self._rest_object(req)
        if obj is None:
            return self.not_found(req)
        rec = self._live_record(req, obj)
        if isinstance(rec, Response):
            return rec
        rec["IsDeleted"] = True
        self._touch(obj, rec)
        return Response.empty(204)

    # --- HTTP: sObject Collections -------------------------------------------------------------

    def _composite(self, req: Request) -> Response:
        """`POST /composite`: up to 25 subrequests, at most 5 of them queries (Query,
        QueryAll, query-more), run in order as the same user; the whole request is one API
        call (REST API guide, "Send Multiple Requests Using Composite"). With allOrNone false
        each subrequest answers alone: `{body, httpHeaders, httpStatusCode, referenceId}`.
        References between subrequests (`@{ref.field}`) are not resolved here: a subrequest
        that uses one is refused, so a client that needs them is not misled."""
        body = self._body(req)
        subs = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subs, list) or not subs:
            return _error_response(
                400, "JSON_PARSER_ERROR", "The request body must hold a compositeRequest array"
            )
        if len(subs) > 25:
            return _error_response(
                400, "LIMIT_EXCEEDED", "A composite request may have at most 25 subrequests"
            )
        paths = [
            urlsplit(str(s.get("url") or "")).path if isinstance(s, dict) else "" for s in subs
        ]
        queries = sum(1 for p in paths if re.search(r"/v\d+\.\d/(?:query|queryAll)(?:/|$)", p))
        if queries > 5:
            return _error_response(
                400,
                "LIMIT_EXCEEDED",
                "A composite request may have at most 5 query operations",
            )
        out: list[dict[str, Any]] = []
        for sub, path in zip(subs, paths, strict=True):
            ref = sub.get("referenceId") if isinstance(sub, dict) else None
            method = str(sub.get("method") or "").upper() if isinstance(sub, dict) else ""
            if not ref or not method or not path.startswith("/services/data/v"):
                answer = _error_response(
                    400,
                    "INVALID_INPUT",
                    "Each subrequest needs a method, a url under /services/data/vXX.X and a "
                    "referenceId",
                )
            elif "@{" in json.dumps(sub) or path.rstrip("/").endswith("/composite"):
                answer = _error_response(
                    400, "INVALID_INPUT", "the sandbox does not resolve composite references"
                )
            else:
                headers = dict(req.headers)
                for k, v in (sub.get("httpHeaders") or {}).items():
                    headers[str(k).lower()] = str(v)
                inner = Request(
                    method=method,
                    path=path,
                    query=parse_qs(urlsplit(str(sub["url"])).query, keep_blank_values=True),
                    headers=headers,
                    body=json.dumps(sub["body"]).encode() if "body" in sub else b"",
                )
                # Routed as the server routes, but not counted again: one call in all.
                answer = SandboxServer.dispatch(self, inner)
            out.append(
                {
                    "body": json.loads(answer.body) if answer.body else None,
                    "httpHeaders": {},
                    "httpStatusCode": answer.status,
                    "referenceId": ref,
                }
            )
        return Response.json({"compositeResponse": out})

    def _collection_records(self, req: Request) -> tuple[list[Any], bool] | Response:
        body = self._body(req)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return _error_response(
                400, "JSON_PARSER_ERROR", "The request body needs a 'records' list"
            )
        records = body["records"]
        if len(records) > 200:
            return _error_response(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        return records, bool(body.get("allOrNone", False))

    def _collection_update(self, req: Request) -> Response:
        parsed = self._collection_records(req)
        if isinstance(parsed, Response):
            return parsed
        records, all_or_none = parsed
        plans: list[tuple[ObjectDef, dict[str, Any], dict[str, Any]] | list[dict[str, Any]]] = []
        for item in records:
            plans.append(self._plan_update(item))

        def save(p: tuple[ObjectDef, dict[str, Any], dict[str, Any]]) -> str:
            self._apply(p[0], p[1], p[2])
            return str(p[1]["Id"])

        return self._collection_answer(plans, all_or_none, save)

    def _plan_update(
        self, item: Any
    ) -> tuple[ObjectDef, dict[str, Any], dict[str, Any]] | list[dict[str, Any]]:
        if not isinstance(item, dict):
            return [_err("JSON_PARSER_ERROR", "each record must be a JSON object")]
        failure = self._record_failures.get(str(item.get("id") or item.get("Id") or "")[:15])
        if failure is not None and failure[2] > 0:
            failure[2] -= 1
            return [_err(failure[0], failure[1])]
        sobject = (item.get("attributes") or {}).get("type")
        if not sobject:
            return [_err("INVALID_TYPE", "Must send a concrete entity type.")]
        name = self.catalog.object_name(str(sobject))
        if name is None:
            return [_err("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")]
        obj = self.schema[name]
        fields = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
        rid = item.get("id", item.get("Id"))
        if not rid:
            return [_err("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])]
        if not _well_formed(rid) or not str(rid).startswith(obj.key_prefix):
            return [
                _err("MALFORMED_ID", f"{obj.label} ID: id value of incorrect type: {rid}", ["Id"])
            ]
        rec = self._find(obj, rid)
        if rec is None:
            return [_err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])]
        if rec["IsDeleted"]:
            return [_err("ENTITY_IS_DELETED", "entity is deleted", [])]
        errors = self._validate(obj, fields, creating=False)
        return errors if errors else (obj, rec, fields)

    def _collection_create(self, req: Request) -> Response:
        parsed = self._collection_records(req)
        if isinstance(parsed, Response):
            return parsed
        records, all_or_none = parsed
        plans: list[Any] = []
        for item in records:
            sobject = (item.get("attributes") or {}).get("type") if isinstance(item, dict) else None
            name = self.catalog.object_name(str(sobject)) if sobject else None
            if name is None:
                plans.append([_err("INVALID_TYPE", "Must send a concrete entity type.")])
                continue
            obj = self.schema[name]
            if item.get("id") or item.get("Id"):
                plans.append([_err("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])])
                continue
            fields = {k: v for k, v in item.items() if k != "attributes"}
            errors = self._validate(obj, fields, creating=True)
            plans.append(errors if errors else (obj, fields))
        return self._collection_answer(plans, all_or_none, lambda p: self._insert(p[0], p[1]))

    def _collection_delete(self, req: Request) -> Response:
        ids = [i for i in (req.query_one("ids") or "").split(",") if i]
        if len(ids) > 200:
            return _error_response(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        all_or_none = (req.query_one("allOrNone") or "false").lower() == "true"
        plans: list[Any] = []
        for rid in ids:
            try:
                obj = self._object_for_id(rid) if _well_formed(rid) else None
            except ValueError:
                obj = None
            rec = self._find(obj, rid) if obj else None
            if obj is None or rec is None:
                plans.append(
                    [
                        _err(
                            "MALFORMED_ID" if obj is None else "INVALID_CROSS_REFERENCE_KEY",
                            f"malformed id {rid}" if obj is None else "invalid cross reference id",
                        )
                    ]
                )
            elif rec["IsDeleted"]:
                plans.append([_err("ENTITY_IS_DELETED", "entity is deleted")])
            else:
                plans.append((obj, rec))

        def remove(p: tuple[ObjectDef, dict[str, Any]]) -> str:
            p[1]["IsDeleted"] = True
            self._touch(p[0], p[1])
            return str(p[1]["Id"])

        return self._collection_answer(plans, all_or_none, remove)

    def _collection_answer(self, plans: list[Any], all_or_none: bool, do: Any) -> Response:
        """SaveResults in request order; failed items carry no id and use statusCode."""

        def failure(errors: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "success": False,
                "errors": [
                    {
                        "statusCode": e["errorCode"],
                        "message": e["message"],
                        "fields": e.get("fields", []),
                    }
                    for e in errors
                ],
            }

        failed = any(isinstance(p, list) for p in plans)
        results: list[dict[str, Any]] = []
        if all_or_none and failed:
            for p in plans:
                if isinstance(p, list):
                    results.append(failure(p))
                else:
                    rid = p[1]["Id"] if isinstance(p[1], dict) and "Id" in p[1] else None
                    rolled = {
                        "success": False,
                        "errors": [
                            {
                                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                                "fields": [],
                            }
                        ],
                    }
                    results.append({"id": rid, **rolled} if rid else rolled)
            return Response.json(results)
        for p in plans:
            if isinstance(p, list):
                results.append(failure(p))
            else:
                results.append({"id": do(p), "success": True, "errors": []})
        return Response.json(results)

    # --- HTTP: Bulk API 2.0 query ----------------------------------------------------------------

    def _job_info(self, job: _BulkJob, *, full: bool) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": job.id,
            "operation": job.operation,
            "object": job.sobject,
            "createdById": "005000000000001AAA",
            "createdDate": job.created,
            "systemModstamp": job.created,
            "state": "JobComplete" if full else "UploadComplete",
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(job.version),
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        if full:
            info.update(
                {
                    "jobType": "V2Query",
                    "numberRecordsProcessed": len(job.rows),
                    "retries": 0,
                    "totalProcessingTime": 10,
                    "isPkChunkingSupported": True,
                }
            )
        return info

    def _bulk_create(self, req: Request) -> Response:
        body = self._body(req)
        if (
            not isinstance(body, dict)
            or body.get("operation") not in ("query", "queryAll")
            or not body.get("query")
        ):
            return _error_response(
                400, "INVALIDJOB", "InvalidJob : operation must be query or queryAll, with a query"
            )
        q = str(body["query"])
        try:
            cq = compile_query(q, self.catalog)
        except SoqlError as exc:
            return _error_response(400, "INVALIDJOB", exc.message(q))
        self._soql_log.append(q)
        rows = self._shaped(cq, body["operation"] == "queryAll", req.params["version"])
        columns = [".".join([h.relationship for h in p.hops] + [p.field]) for p in cq.select]
        types = [p.type for p in cq.select]
        table = [
            [_csv_value(_dig(row, c), t) for c, t in zip(columns, types, strict=True)]
            for row in rows
        ]
        if not cq.order_by:
            # Salesforce splits a large query job into chunks by primary key and processes
            # them in parallel: without ORDER BY the result arrives in no promised order. The
            # sandbox delivers its chunks shuffled so a client that assumes Id order fails here.
            chunks = [table[i : i + _BULK_CHUNK] for i in range(0, len(table), _BULK_CHUNK)]
            self._rng.shuffle(chunks)
            table = [row for chunk in chunks for row in chunk]
        job_id = id18("750" + "".join(self._rng.choice(_BASE62) for _ in range(12)))
        job = _BulkJob(
            job_id,
            body["operation"],
            cq.sobject,
            req.params["version"],
            self.now(),
            table,
            columns,
            {},
        )
        self._jobs[job_id] = job
        return Response.json(self._job_info(job, full=False))

    def _bulk_list(self, req: Request) -> Response:
        return Response.json(
            {
                "done": True,
                "records": [self._job_info(j, full=True) for j in self._jobs.values()],
                "nextRecordsUrl": None,
            }
        )

    def _bulk_info(self, req: Request) -> Response:
        job = self._jobs.get(req.params["job"])
        if job is None:
            return self.not_found(req)
        return Response.json(self._job_info(job, full=True))

    def _bulk_abort(self, req: Request) -> Response:
        job = self._jobs.get(req.params["job"])
        if job is None:
            return self.not_found(req)
        info = self._job_info(job, full=True)
        info["state"] = "Aborted"
        return Response.json(info)

    def _bulk_delete(self, req: Request) -> Response:
        if self._jobs.pop(req.params["job"], None) is None:
            return self.not_found(req)
        return Response.empty(204)

    def _bulk_results(self, req: Request) -> Response:
        job = self._jobs.get(req.params["job"])
        if job is None:
            return self.not_found(req)
        raw_max = req.query_one("maxRecords") or ""
        page = int(raw_max) if raw_max.isdigit() and int(raw_max) > 0 else 50000
        locator = req.query_one("locator")
        start = 0
        if locator:
            if locator not in job.locators:
                return _error_response(400, "INVALID_LOCATOR", f"Invalid locator: {locator}")
            start = job.locators[locator]
        chunk = job.rows[start : start + page]
        end = start + len(chunk)
        next_locator = "null"
        if end < len(job.rows):
            next_locator = base64.b64encode(str(end).encode()).decode().rstrip("=")
            job.locators[next_locator] = end
        buf = io.StringIO()
        writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(job.columns)
        writer.writerows(chunk)
        return Response(
            200,
            buf.getvalue().encode("utf-8"),
            {
                "Content-Type": "text/csv",
                "Sforce-NumberOfRecords": str(len(chunk)),
                "Sforce-Locator": next_locator,
            },
        )

    # --- HTTP: OAuth ---------------------------------------------------------------------------

    def _oauth_error(self, error: str, description: str, status: int = 400) -> Response:
        return Response.json({"error": error, "error_description": description}, status)

    def _oauth_token(self, req: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type")
        if grant == "password":
            if form.get("client_id") != self.consumer_key:
                return self._oauth_error("invalid_client_id", "client identifier invalid")
            if not hmac.compare_digest(form.get("client_secret", ""), self.consumer_secret):
                return self._oauth_error("invalid_client", "invalid client credentials")
            user = form.get("username", "")
            if user not in self.users or not hmac.compare_digest(
                form.get("password", ""), self.users[user]
            ):
                return self._oauth_error("invalid_grant", "authentication failure")
            return self._token_answer(user, signed=True)
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt_grant(form.get("assertion", ""))
        if grant == "client_credentials":
            key, secret = form.get("client_id", ""), form.get("client_secret", "")
            auth = req.header("Authorization") or ""
            if auth.lower().startswith("basic "):
                try:
                    key, _, secret = (
                        base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
                    )
                except ValueError:
                    return self._oauth_error("invalid_client", "invalid client credentials")
            if key != self.consumer_key:
                return self._oauth_error("invalid_client_id", "client identifier invalid")
            if not hmac.compare_digest(secret, self.consumer_secret):
                return self._oauth_error("invalid_client", "invalid client credentials")
            return self._token_answer(
                next(iter(self.users), "integration@example.com"), signed=True
            )
        return self._oauth_error("unsupported_grant_type", "grant type not supported")

    def _jwt_grant(self, assertion: str) -> Response:
        try:
            header = jwt.get_unverified_header(assertion)
            if header.get("alg") != "RS256":
                return self._oauth_error("invalid_grant", "invalid assertion")
            if self.jwt_public_key is not None:
                claims = jwt.decode(
                    assertion,
                    self.jwt_public_key,
                    algorithms=["RS256"],
                    options={"verify_exp": False, "verify_aud": False},
                )
            else:
                claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self._oauth_error("invalid_grant", "invalid assertion")
        if claims.get("iss") != self.consumer_key:
            return self._oauth_error("invalid_client_id", "client identifier invalid")
        allowed_aud = {"https://login.salesforce.com", "https://test.salesforce.com", self.url}
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(a in allowed_aud for a in auds):
            return self._oauth_error("invalid_grant", "audience is invalid")
        try:
            exp = int(str(claims.get("exp")))  # simple-salesforce sends it as a string
        except (TypeError, ValueError):
            return self._oauth_error("invalid_grant", "invalid assertion")
        if exp < time.time():
            return self._oauth_error("invalid_grant", "expired authorization code")
        user = claims.get("sub")
        if user not in self.users:
            return self._oauth_error("invalid_grant", "user hasn't approved this consumer")
        return self._token_answer(str(user), signed=False)

    def _token_answer(self, user: str, *, signed: bool) -> Response:
        token = self.issue_token()
        issued = str(int(time.time() * 1000))
        user_index = list(self.users).index(user) + 1 if user in self.users else 1
        user_id = id18(f"005{user_index:012d}")
        body: dict[str, Any] = {
            "access_token": token,
            "instance_url": self.url,
            "id": f"{self.url}/id/{self.org_id}/{user_id}",
            "token_type": "Bearer",
            "issued_at": issued,
            "scope": "api",
        }
        if signed:
            digest = hmac.new(self._signing_key, (body["id"] + issued).encode(), "sha256").digest()
            body["signature"] = base64.b64encode(digest).decode()
        return Response.json(body)

    # --- control API ---------------------------------------------------------------------------

    def _ctl(self, req: Request, fn: Callable[[Any], Mapping[str, Any] | None]) -> Response:
        """Run `fn(json body)`; a refusal is 400 with the reason, anything else {"ok": true}."""
        try:
            result = fn(req.json() or {})
        except (ValueError, KeyError, TypeError) as exc:
            return Response.json({"ok": False, "error": str(exc)}, 400)
        return Response.json({"ok": True, **(result or {})})

    def _ctl_load(self, req: Request) -> Response:
        def load(body: Any) -> dict[str, Any]:
            self.load(body)
            return {"records": self.stats()["records"]}

        return self._ctl(req, load)

    def _ctl_reset(self, req: Request) -> Response:
        return self._ctl(req, lambda _: self.reset())

    def _ctl_merge(self, req: Request) -> Response:
        return self._ctl(
            req, lambda b: self.merge(b["winner"], b["losers"], keep_from=b.get("keep_from"))
        )

    def _ctl_expire(self, req: Request) -> Response:
        return self._ctl(req, lambda _: self.expire_sessions())

    def _ctl_clock(self, req: Request) -> Response:
        def advance(body: Any) -> dict[str, Any]:
            self.advance_clock(float(body.get("advance", 0)))
            return {"now": self.now()}

        return self._ctl(req, advance)

    def _ctl_daily_limit(self, req: Request) -> Response:
        def change(body: Any) -> dict[str, Any]:
            if "max" in body:
                self.set_daily_limit(int(body["max"]))
            if body.get("reset_usage"):
                self.reset_api_usage()
            return {"used": self._api_used, "max": self.daily_api_limit}

        return self._ctl(req, change)

    def _ctl_list(self, req: Request) -> Response:
        include = (req.query_one("include_deleted") or "").lower() in ("1", "true")
        return self._ctl(
            req, lambda _: {"records": self.records(req.params["obj"], include_deleted=include)}
        )

    def _ctl_create(self, req: Request) -> Response:
        return self._ctl(req, lambda b: {"id": self.create(req.params["obj"], b)})

    def _ctl_update(self, req: Request) -> Response:
        return self._ctl(req, lambda b: self.update(req.params["obj"], req.params["id"], b))

    def _ctl_delete(self, req: Request) -> Response:
        return self._ctl(req, lambda _: self.delete(req.params["obj"], req.params["id"]))


class _BadJsonType:
    pass


_BadJson = _BadJsonType()


def _auto_field(obj: ObjectDef) -> str:
    return "OrderNumber" if obj.name == "Order" else "Name"


def _dig(row: Mapping[str, Any], column: str) -> Any:
    node: Any = row
    for part in column.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _csv_value(value: Any, ftype: str) -> str:
    """A value as Bulk API 2.0 writes it in CSV (datetimes in Z form, unlike REST's +0000)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if ftype == "datetime":
        return format_datetime(parse_datetime(str(value))).replace("+0000", "Z")
    return str(value)


def _load_public_key(key: str | bytes) -> Any:
    """A PEM public key or X.509 certificate, as PyJWT wants it."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = key.encode() if isinstance(key, str) else key
    if b"BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return load_pem_public_key(data)


__all__ = [
    "LogicalClock",
    "SalesforceSandbox",
    "SalesforceSandboxError",
    "build_schema",
    "format_datetime",
    "id18",
]
