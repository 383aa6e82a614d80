"""The Stripe target: customers through `stripe.StripeClient`, nothing else.

Never deletes, merges or moves a customer. Every write carries the idempotency key the engine
chose, so a retried request or a repeated run cannot create a second customer. Requests are
paced per billing account below Stripe's rate cap; a 429 slows the pace down and is retried
here, so a rate limit never turns into a failed record while the run has time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import stripe

from connector.billing.base import CustomerPayload, RemoteCustomer
from connector.config import BillingAccountConfig, SecretSource
from connector.errors import AuthenticationError, ConfigError, RecordError, TransientError

# Stripe's documented metadata limits.
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
IDEMPOTENCY_KEY_MAX = 255

# How often one request is retried here after a 429 before the record is left for a later run.
RATE_LIMIT_RETRIES = 6


class Pacer:
    """A token bucket that slows down on 429 and recovers gradually (additive increase)."""

    def __init__(self, rate: float) -> None:
        self.max_rate = rate
        self.rate = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + 1.0 / self.rate
        delay = start - now
        if delay > 0:
            time.sleep(delay)

    def slow_down(self) -> None:
        with self._lock:
            self.rate = max(self.max_rate / 20, self.rate / 2)

    def recover(self) -> None:
        with self._lock:
            if self.rate < self.max_rate:
                self.rate = min(self.max_rate, self.rate + self.max_rate / 50)


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
            raise RecordError("metadata key is empty", code="metadata_invalid")
        if len(k) > METADATA_KEY_MAX:
            raise RecordError(
                f"metadata key {k!r} is longer than {METADATA_KEY_MAX} characters",
                code="metadata_invalid",
            )
        if len(v) > METADATA_VALUE_MAX:
            raise RecordError(
                f"metadata value of {k!r} is longer than {METADATA_VALUE_MAX} characters",
                code="metadata_invalid",
            )
        out[k] = v
    if sum(1 for v in out.values() if v != "") > METADATA_MAX_KEYS:
        raise RecordError(f"more than {METADATA_MAX_KEYS} metadata keys", code="metadata_invalid")
    return out


def _to_payload(customer: Any) -> dict[str, Any]:
    data: dict[str, Any] = customer.to_dict() if hasattr(customer, "to_dict") else dict(customer)
    return data


class StripeTarget:
    """One Stripe account. `name` is the billing account id that links are keyed by."""

    def __init__(
        self, account: BillingAccountConfig, secrets: SecretSource, *, http_client: Any = None
    ) -> None:
        key = secrets.get(account.api_key_env)
        if not key:
            raise ConfigError(
                f"set the environment variable {account.api_key_env} (or {account.api_key_env}_FILE) "
                f"to the Stripe secret or restricted key of billing account '{account.id}'"
            )
        self._account = account
        self.calls = 0
        self.rate_limited = 0
        self.pacer = Pacer(account.max_requests_per_second)
        kwargs: dict[str, Any] = {"max_network_retries": account.max_network_retries}
        if account.api_base:
            kwargs["base_addresses"] = {"api": account.api_base}
        if account.stripe_account:
            kwargs["stripe_account"] = account.stripe_account
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._client = stripe.StripeClient(key, **kwargs)

    @property
    def name(self) -> str:
        return self._account.id

    # --- the port ------------------------------------------------------------------------

    def create_customer(self, payload: CustomerPayload, *, idempotency_key: str) -> str:
        params = self._params(payload)
        customer = self._call(
            lambda: self._client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key[:IDEMPOTENCY_KEY_MAX]},
            )
        )
        return str(customer.id)

    def update_customer(
        self, customer_id: str, payload: CustomerPayload, *, idempotency_key: str
    ) -> None:
        params = self._params(payload)
        self._call(
            lambda: self._client.v1.customers.update(
                customer_id,
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key[:IDEMPOTENCY_KEY_MAX]},
            ),
            customer_id=customer_id,
        )

    def fetch_customer(self, customer_id: str) -> RemoteCustomer | None:
        try:
            customer = self._call(
                lambda: self._client.v1.customers.retrieve(customer_id), customer_id=customer_id
            )
        except RecordError as exc:
            if exc.code == "customer_missing":
                return None
            raise
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
            lambda: self._client.v1.customers.search(params={"query": query, "limit": 10})
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

    def _call(self, fn: Any, *, customer_id: str | None = None) -> Any:
        attempt = 0
        while True:
            self.pacer.wait()
            self.calls += 1
            try:
                result = fn()
                self.pacer.recover()
                return result
            except stripe.RateLimitError as exc:
                # 429: rate cap or lock_timeout. Slow down and try again with the same key.
                self.rate_limited += 1
                self.pacer.slow_down()
                attempt += 1
                if attempt > RATE_LIMIT_RETRIES:
                    raise TransientError(
                        f"Stripe kept refusing with 429 ({exc.code or 'rate_limit'})",
                        code=exc.code or "rate_limit",
                    ) from None
                retry_after = _retry_after(exc)
                time.sleep(
                    retry_after
                    if retry_after is not None
                    else min(8.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2)
                )
            except stripe.AuthenticationError:
                raise AuthenticationError(
                    f"Stripe refused the key of billing account '{self.name}' (check {self._account.api_key_env})"
                ) from None
            except stripe.PermissionError as exc:
                raise AuthenticationError(
                    f"the Stripe key of billing account '{self.name}' lacks a permission: {exc.user_message or exc}. "
                    "A restricted key needs Customers: write"
                ) from None
            except stripe.IdempotencyError as exc:
                raise RecordError(
                    f"Stripe idempotency conflict: {exc.user_message or exc}",
                    code="idempotency_error",
                ) from None
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404 or exc.code == "resource_missing":
                    raise RecordError(
                        f"customer {customer_id} does not exist in Stripe billing account '{self.name}'",
                        code="customer_missing",
                    ) from None
                param = f" (parameter {exc.param})" if exc.param else ""
                raise RecordError(
                    f"Stripe refused the request{param}: {exc.user_message or exc}",
                    code=exc.code or "invalid_request",
                ) from None
            except stripe.APIConnectionError as exc:
                raise TransientError(
                    f"Stripe unreachable: {exc.user_message or exc}", code="connection"
                ) from None
            except stripe.APIError as exc:
                raise TransientError(
                    f"Stripe error {exc.http_status}: {exc.user_message or exc}", code="api_error"
                ) from None
            except stripe.StripeError as exc:
                raise TransientError(
                    f"Stripe error {exc.http_status}: {exc.user_message or exc}",
                    code="stripe_error",
                ) from None


def _retry_after(exc: stripe.StripeError) -> float | None:
    headers = exc.headers or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return min(30.0, float(value)) if value else None
    except ValueError:
        return None
