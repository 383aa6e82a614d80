"""The Stripe target: customers through `stripe.StripeClient`, nothing else.

Never deletes, merges or moves a customer. Every write carries the idempotency key the engine
chose, so a retried request or a repeated run cannot create a second customer. Requests are
paced per credential below Stripe's global cap and per-endpoint budgets (`ratelimit`); a 429
slows the pace down and is retried there, so a rate limit never turns into a failed record
while the run has time. `StripeClient` is thread-safe: concurrent writers share one target.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote_plus

import stripe

from connector.billing.base import (
    BillingUnreachable,
    CustomerMissing,
    CustomerPayload,
    InvalidRequest,
    RemoteCustomer,
    TargetRules,
)
from connector.billing.ratelimit import Budget, RateLimiter, Refusal, limiter_for_credential
from connector.config import BillingAccountConfig, SecretSource
from connector.errors import AuthenticationError, ConfigError, TransientError
from connector.http_env import plain_session
from connector.log import REDACTOR
from connector.secret_shapes import SecretShape

# Stripe's documented metadata limits.
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
IDEMPOTENCY_KEY_MAX = 255
DEFAULT_API_BASE = "https://api.stripe.com"
ORGANIZATION_KEY_PREFIX = "sk_org_"

# Every request pins this API version (Stripe-Version) unless the account sets its own. Pinned
# here rather than taken from the installed SDK, so upgrading stripe-python never changes what
# the connector's requests mean. Organization keys require an explicit version, and which
# customer fields a sharing group shares depends on it (see SHARED_FIELDS_FROM_ENDIVE).
PINNED_API_VERSION = "2026-10-28.endive"

# Customer sharing (Stripe Organizations): from `2026-09-30.endive` these customer fields are
# shared by every account of a sharing group (Stripe changelog, "Adds additional shared fields
# to customer sharing"); the contact fields name, email, phone and address are shared at every
# version. A shared field is written once, by one account.
ENDIVE_SHARING_VERSION = "2026-09-30"
SHARED_ALWAYS: frozenset[str] = frozenset({"name", "email", "phone", "address"})
SHARED_FROM_ENDIVE: frozenset[str] = frozenset(
    {
        "metadata",
        "description",
        "shipping",
        "preferred_locales",
        "tax_exempt",
        "business_name",
        "invoice_prefix",
        "tax_ids",
    }
)


def shared_fields(version: str) -> frozenset[str]:
    """Customer fields a sharing group shares when requests pin `version`."""
    if version[:10] >= ENDIVE_SHARING_VERSION:
        return SHARED_ALWAYS | SHARED_FROM_ENDIVE
    return SHARED_ALWAYS


def account_shared_fields(account: BillingAccountConfig) -> frozenset[str]:
    return shared_fields(account.stripe_version or PINNED_API_VERSION)


# Secret keys (sk_live_, sk_test_), restricted keys (rk_live_, rk_test_) and Organization keys
# (sk_org_...): refused wherever they appear in a config or mapping file.
KEY_SHAPE = SecretShape(
    re.compile(r"\b(?:sk|rk)_(?:org_)?(?:live|test)_[A-Za-z0-9]{8,}|\bsk_org_[A-Za-z0-9_]{8,}"),
    "a Stripe secret or restricted key",
    "STRIPE_API_KEY",
)

RULES = TargetRules(
    system="stripe",
    # Stripe keeps idempotency keys for at least 24 hours.
    idempotency_window=timedelta(hours=24),
    idempotency_key_max=IDEMPOTENCY_KEY_MAX,
    tag_field="metadata",
    tag_key_max=METADATA_KEY_MAX,
    tag_value_max=METADATA_VALUE_MAX,
    tag_keys_max=METADATA_MAX_KEYS,
    # "Individual keys can be unset by posting an empty value to them" (and top-level fields).
    empty_unsets=True,
    client_chosen_ids=False,
    search=True,
    separate_calls=frozenset(),
)

# Stripe's per-endpoint budgets ("API endpoints have a default limit of 25 requests per
# second"; Search 20), keyed by the names config's `endpoint_limits` uses. Creating and updating
# a customer are two endpoints, each with its own budget.
ENDPOINT_RATE = 25.0
DEFAULT_ENDPOINT_RATES: Mapping[str, float] = {"customers.search": 20.0}
ENDPOINTS = frozenset(
    {
        "customers.create",
        "customers.update",
        "customers.retrieve",
        "customers.search",
        "customers.list",
    }
)


def budget_of(account: BillingAccountConfig) -> Budget:
    """The account's global cap and its endpoints' budgets (raised ones from config)."""
    unknown = sorted(set(account.endpoint_limits) - ENDPOINTS)
    if unknown:
        raise ConfigError(
            f"billing account '{account.id}': endpoint_limits names {', '.join(unknown)}; "
            f"Stripe endpoints the connector calls: {', '.join(sorted(ENDPOINTS))}",
            key=f"billing.accounts[{account.id}].endpoint_limits",
        )
    return Budget(
        rate=account.max_requests_per_second,
        endpoint_rate=ENDPOINT_RATE,
        endpoints={**DEFAULT_ENDPOINT_RATES, **account.endpoint_limits},
    )


def _refusal(exc: BaseException) -> Refusal | None:
    """What a 429 said (rate cap or lock_timeout); None for anything else."""
    if not isinstance(exc, stripe.RateLimitError):
        return None
    headers = exc.headers or {}
    reason = headers.get("stripe-rate-limited-reason") or headers.get("Stripe-Rate-Limited-Reason")
    return Refusal(code=exc.code or "rate_limit", retry_after=_retry_after(exc), reason=reason)


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Trim metadata and enforce Stripe's limits. Stripe stores values untrimmed, so we trim.

    An empty value means "unset this key" and is sent as "". Raises RecordError naming the key
    when a limit would be broken (the mapping checker should have caught it earlier).
    """
    out: dict[str, str] = {}
    for key, value in metadata.items():
        k = str(key).strip()
        v = "" if value is None else str(value).strip()
        if not k:
            raise InvalidRequest("metadata key is empty", code="metadata_invalid")
        if len(k) > METADATA_KEY_MAX:
            raise InvalidRequest(
                f"metadata key {k!r} is longer than {METADATA_KEY_MAX} characters",
                code="metadata_invalid",
            )
        if len(v) > METADATA_VALUE_MAX:
            raise InvalidRequest(
                f"metadata value of {k!r} is longer than {METADATA_VALUE_MAX} characters",
                code="metadata_invalid",
            )
        out[k] = v
    if sum(1 for v in out.values() if v != "") > METADATA_MAX_KEYS:
        raise InvalidRequest(
            f"more than {METADATA_MAX_KEYS} metadata keys", code="metadata_invalid"
        )
    return out


def _to_payload(customer: Any) -> dict[str, Any]:
    data: dict[str, Any] = customer.to_dict() if hasattr(customer, "to_dict") else dict(customer)
    return data


def _quiet_sdk_logging() -> None:
    """Have stripe-python format its log lines only when something would show them.

    The SDK builds every "Request to Stripe api" / "API response body" line (logfmt: a sort,
    two regex searches and a repr per field, the whole response body included) before it
    hands it to the `stripe` logger, which drops it unless DEBUG or INFO is enabled: a few
    percent of a create's CPU for nothing. The guard asks first, as `logging` would, and then
    calls the SDK's own function, so with `stripe.log`, STRIPE_LOG or the logger's level set
    the lines are what they were. The SDK's requestor imports the functions by name, so both
    modules get the guarded ones.
    """
    import logging

    from stripe import _api_requestor, _util

    if getattr(_util.log_debug, "connector_guarded", False):
        return

    def guarded(level: int, original: Any, console: tuple[str, ...]) -> Any:
        def log(message: str, **params: Any) -> None:
            shown = _util._console_log_level()  # type: ignore[no-untyped-call]
            if shown in console or _util.logger.isEnabledFor(level):
                original(message, **params)

        log.connector_guarded = True  # type: ignore[attr-defined]
        return log

    debug = guarded(logging.DEBUG, _util.log_debug, ("debug",))
    info = guarded(logging.INFO, _util.log_info, ("debug", "info"))
    _util.log_debug, _util.log_info = debug, info
    _api_requestor.log_debug, _api_requestor.log_info = debug, info  # type: ignore[attr-defined]


_quiet_sdk_logging()


class SettledRequestsClient(stripe.RequestsClient):
    """stripe-python's requests client, with one settled session per thread.

    Like the SDK's default client it gives each thread a session of its own (a
    `requests.Session` is not documented as safe to share between threads); only how that
    session is made differs (`connector.http_env.settle`, and a `PlainSession`, which prepares
    the SDK's plain requests without `requests`' generic merging). Stripe's CA bundle is
    still passed per request by the SDK.
    """

    def _request_internal(self, *args: Any, **kwargs: Any) -> Any:
        local = getattr(self, "_thread_local", None)
        if local is not None and getattr(local, "session", None) is None:
            local.session = plain_session()
        return super()._request_internal(*args, **kwargs)


class StripeTarget:
    """One Stripe account. `name` is the billing account name that links are keyed by."""

    rules = RULES

    def __init__(
        self, account: BillingAccountConfig, secrets: SecretSource, *, http_client: Any = None
    ) -> None:
        key = secrets.get(account.api_key_env)
        if not key:
            raise ConfigError(
                f"set the environment variable {account.api_key_env} (or {account.api_key_env}_FILE) "
                f"to the Stripe secret or restricted key of billing account '{account.id}'"
            )
        # Whatever variable holds it, the key never reaches a log line.
        REDACTOR.add(key)
        organization_key = key.startswith(ORGANIZATION_KEY_PREFIX)
        if organization_key and not account.stripe_context:
            instead = (
                f"; replace stripe_account: {account.stripe_account} with stripe_context: "
                f"{account.stripe_account} (Stripe ignores Stripe-Account for organization keys)"
                if account.stripe_account
                else ""
            )
            raise ConfigError(
                f"{account.api_key_env} holds a Stripe "
                "organization key (sk_org_...), which acts on no account of its own; name the "
                f"account it acts on with stripe_context: acct_...{instead}",
                key=f"billing.accounts[{account.id}].stripe_context",
            )
        self._account = account
        self.url = account.api_base or DEFAULT_API_BASE
        self.api_version = account.stripe_version or PINNED_API_VERSION
        #: the Stripe account this target acts on, when the key is not the account's own
        self.acts_on = account.stripe_context or account.stripe_account
        self.calls = 0
        self.rate_limited = 0
        # True after a request found no connection at all: the next request is not retried by
        # the SDK, so a dead account costs its backoff once, not once per record.
        self._unreachable = False
        self._counts = threading.Lock()  # writers share the target (StripeClient is thread-safe)
        self.limiter: RateLimiter = limiter_for_credential(self.url, key, budget_of(account))
        kwargs: dict[str, Any] = {
            "max_network_retries": account.max_network_retries,
            # Always explicit: organization keys require it, and it fixes what is shared.
            "stripe_version": self.api_version,
        }
        if account.api_base:
            kwargs["base_addresses"] = {"api": account.api_base}
        if account.stripe_context:
            kwargs["stripe_context"] = account.stripe_context
        elif account.stripe_account:
            kwargs["stripe_account"] = account.stripe_account
        # A client of our own, so requests stop reading proxy settings from the environment on
        # every request when none is configured (see connector.http_env); with HTTPS_PROXY set
        # it behaves as the SDK's default client.
        kwargs["http_client"] = http_client if http_client is not None else SettledRequestsClient()
        self._client = stripe.StripeClient(key, **kwargs)

    @property
    def name(self) -> str:
        return self._account.id

    # --- the port ------------------------------------------------------------------------

    def create_customer(self, payload: CustomerPayload, *, idempotency_key: str) -> str:
        params = self._params(payload)
        self._check_key(idempotency_key)
        if _RAW_RESERVED.isdisjoint(params):
            answer = self._call(
                "customers.create",
                lambda options: self._write("/v1/customers", params, options, idempotency_key),
            )
            return str(answer["id"])
        customer = self._call(
            "customers.create",
            lambda options: self._client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options=_with_key(options, idempotency_key),
            ),
        )
        return str(customer.id)

    def update_customer(
        self, customer_id: str, payload: CustomerPayload, *, idempotency_key: str
    ) -> None:
        params = self._params(payload)
        self._check_key(idempotency_key)
        if _RAW_RESERVED.isdisjoint(params):
            path = f"/v1/customers/{quote_plus(customer_id)}"
            self._call(
                "customers.update",
                lambda options: self._write(path, params, options, idempotency_key),
                customer_id=customer_id,
            )
            return
        self._call(
            "customers.update",
            lambda options: self._client.v1.customers.update(
                customer_id,
                params=params,  # type: ignore[arg-type]
                options=_with_key(options, idempotency_key),
            ),
            customer_id=customer_id,
        )

    def _write(
        self, path: str, params: Mapping[str, Any], options: stripe.RequestOptions, key: str
    ) -> Mapping[str, Any]:
        """POST `params` through the SDK's `raw_request` and return the JSON answer.

        Writes need only the customer's id back, and building the full `Customer` object from
        the answer (every field, nested objects, a requestor per object) was the largest single
        cost of a create after the HTTP round trip. `raw_request` still goes through the
        client's requestor: the same key, version, account, retries, encoding and typed errors
        (`_interpret_response` raises `StripeError`s as the typed call does).
        """
        answer = self._client.raw_request("post", path, **params, **_with_key(options, key))
        data: Mapping[str, Any] = answer.data
        return data

    def fetch_customers(self, ids: Sequence[str]) -> dict[str, RemoteCustomer | None]:
        # Stripe has no retrieve-many by id; one retrieve per distinct id, paced like the rest.
        out: dict[str, RemoteCustomer | None] = {}
        for customer_id in ids:
            if customer_id not in out:
                out[customer_id] = self.fetch_customer(customer_id)
        return out

    def fetch_customer(self, customer_id: str) -> RemoteCustomer | None:
        try:
            customer = self._call(
                "customers.retrieve",
                lambda options: self._client.v1.customers.retrieve(
                    customer_id,
                    options=options,
                ),
                customer_id=customer_id,
            )
        except CustomerMissing:
            return None
        data = _to_payload(customer)
        return RemoteCustomer(
            id=str(data["id"]),
            payload=data,
            deleted=bool(data.get("deleted")),
            metadata=dict(data.get("metadata") or {}),
        )

    def find_by_salesforce_account(self, account_id: str) -> list[RemoteCustomer]:
        # Search is eventually consistent; used only to reconcile creates older than Stripe's
        # idempotency window, never for read-after-write.
        query = f"metadata['salesforce_account_id']:'{account_id}'"
        result = self._call(
            "customers.search",
            lambda options: self._client.v1.customers.search(
                params={"query": query, "limit": 10},
                options=options,
            ),
        )
        out = []
        for c in result.data:
            data = _to_payload(c)
            out.append(
                RemoteCustomer(
                    id=str(data["id"]), payload=data, metadata=dict(data.get("metadata") or {})
                )
            )
        return out

    # --- mechanics -----------------------------------------------------------------------

    @staticmethod
    def _params(payload: CustomerPayload) -> dict[str, Any]:
        params = dict(payload)
        if "metadata" in params and isinstance(params["metadata"], Mapping):
            params["metadata"] = check_metadata(params["metadata"])
        return params

    @staticmethod
    def _check_key(key: str) -> None:
        # Never cut a key: a cut key can name an older write and replay it instead of this one.
        if not key or len(key) > IDEMPOTENCY_KEY_MAX:
            raise ValueError(
                f"idempotency key of {len(key)} characters; Stripe accepts 1 to {IDEMPOTENCY_KEY_MAX}"
            )

    def _call(self, endpoint: str, fn: Any, *, customer_id: str | None = None) -> Any:
        def send() -> Any:
            with self._counts:
                self.calls += 1
            options: stripe.RequestOptions = {"max_network_retries": 0} if self._unreachable else {}
            return fn(options)

        def counted() -> None:
            with self._counts:
                self.rate_limited += 1

        # 429s (rate cap or lock_timeout) are retried in the limiter with the same key.
        try:
            result = self.limiter.call(endpoint, send, _refusal, who=self.name, on_refused=counted)
        except stripe.APIConnectionError as exc:
            if _no_connection(exc):
                self._unreachable = True
                hint = (
                    "check that the api_base configured for this account is up"
                    if self._account.api_base
                    else "check this host's network, proxy and firewall"
                )
                raise BillingUnreachable(
                    f"cannot connect to Stripe billing account '{self.name}' at {self.url} "
                    f"({_network_reason(exc)}); {hint}",
                    billing_account=self.name,
                    url=self.url,
                ) from None
            # Connected, then the connection dropped: the request may or may not have been
            # applied; the same idempotency key makes trying again later safe.
            self._unreachable = False
            raise TransientError(
                f"connection to Stripe billing account '{self.name}' at {self.url} was "
                f"interrupted ({_network_reason(exc)})",
                code="connection",
            ) from None
        except stripe.StripeError as exc:
            self._unreachable = False
            raise self._translate(exc, customer_id) from None
        self._unreachable = False
        return result

    def _translate(self, exc: stripe.StripeError, customer_id: str | None) -> Exception:
        """A Stripe answer (not a network failure) as one of the port's typed errors."""
        if isinstance(exc, stripe.AuthenticationError):
            return AuthenticationError(
                f"Stripe refused the key of billing account '{self.name}' (check {self._account.api_key_env})"
            )
        if isinstance(exc, stripe.PermissionError):
            return AuthenticationError(
                f"the Stripe key of billing account '{self.name}' lacks a permission: {exc.user_message or exc}. "
                "A restricted key needs Customers: write"
            )
        if isinstance(exc, stripe.IdempotencyError):
            return InvalidRequest(
                f"Stripe idempotency conflict: {exc.user_message or exc}",
                code="idempotency_error",
            )
        if isinstance(exc, stripe.InvalidRequestError):
            if exc.http_status == 404 or exc.code == "resource_missing":
                return CustomerMissing(
                    f"customer {customer_id} does not exist in Stripe billing account '{self.name}'",
                    customer_id=customer_id,
                    billing_account=self.name,
                )
            param = f" (parameter {exc.param})" if exc.param else ""
            return InvalidRequest(
                f"Stripe refused the request{param}: {exc.user_message or exc}",
                code=exc.code or "invalid_request",
                param=exc.param,
            )
        if isinstance(exc, stripe.APIError):
            return TransientError(
                f"Stripe error {exc.http_status}: {exc.user_message or exc}", code="api_error"
            )
        return TransientError(
            f"Stripe error {exc.http_status}: {exc.user_message or exc}", code="stripe_error"
        )


# `raw_request` takes request options and its own keys among the parameters: a payload with a
# field of one of these names goes through the typed call instead (no customer field has one).
_RAW_RESERVED = frozenset(
    {
        "api_key",
        "stripe_version",
        "stripe_account",
        "stripe_context",
        "max_network_retries",
        "idempotency_key",
        "content_type",
        "headers",
        "base",
        "usage",
    }
)


def _with_key(options: stripe.RequestOptions, key: str) -> stripe.RequestOptions:
    out: stripe.RequestOptions = {**options, "idempotency_key": key}
    return out


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (causes, contexts, wrapped `reason`s and args)."""
    seen: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo and len(seen) < 32:
        e = todo.pop()
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    return seen


def _no_connection(exc: stripe.APIConnectionError) -> bool:
    """True when no connection was ever made (refused, no route, DNS, TLS): nothing was sent,
    and the next record will meet the same wall. False for a connection dropped mid-request."""
    for e in _causes(exc):
        if isinstance(e, ConnectionRefusedError | socket.gaierror | ssl.SSLError):
            return True
        if type(e).__name__ in _NO_CONNECTION_TYPES:
            return True
        if isinstance(e, OSError) and e.errno in _NO_ROUTE_ERRNOS:
            return True
    return False


_NO_ROUTE_ERRNOS = frozenset({101, 111, 113})  # ENETUNREACH, ECONNREFUSED, EHOSTUNREACH
# urllib3 / requests names for "the connection was never made" (a connect timeout included:
# nothing was sent, and a host that swallows SYNs will swallow the next record's too).
_NO_CONNECTION_TYPES = frozenset(
    {
        "NewConnectionError",
        "NameResolutionError",
        "SSLError",
        "ConnectTimeoutError",
        "ConnectTimeout",
    }
)


def _network_reason(exc: stripe.APIConnectionError) -> str:
    """The lowest-level reason, without the SDK's advice to write to Stripe's support."""
    causes = _causes(exc)
    for e in reversed(causes):
        if isinstance(e, OSError) and e.strerror:
            return str(e.strerror)
    for e in reversed(causes):
        if not isinstance(e, stripe.StripeError) and str(e):
            return f"{type(e).__name__}: {str(e)[:200]}"
    return "network error"


def _retry_after(exc: stripe.StripeError) -> float | None:
    headers = exc.headers or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return min(30.0, float(value)) if value else None
    except ValueError:
        return None
