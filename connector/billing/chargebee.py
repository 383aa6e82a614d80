"""The Chargebee target: customers through the official `chargebee` SDK v3, nothing else.

Never deletes, merges or moves a customer (Chargebee cannot merge across business entities, and
a transfer between entities is an admin's decision). Creates are idempotent by construction:
the customer id is derived from the Salesforce org and account (and the business entity when
customers are not shared), and every write carries `chargebee-idempotency-key`; a create that
finds its id taken retrieves the customer and adopts it only when its `meta_data` names the same
Salesforce account. Name, email, phone, company, custom fields and `meta_data` change with
`POST /customers/{id}`; the billing address only with `update_billing_info`. When the second of
the two calls fails, the error says what the first one applied, so nothing claims a state
Chargebee does not have. Requests are paced per credential (150 a minute by default, a test
site's limit) by the shared limiter (`ratelimit`), which also retries a 429 before it becomes
`RateLimited`. The SDK opens an httpx client per request, so concurrent writers share a target.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from connector.billing.base import (
    BillingUnreachable,
    CustomerMissing,
    CustomerPayload,
    InvalidRequest,
    PartiallyApplied,
    PartiallyRefused,
    RemoteCustomer,
    TargetRules,
)
from connector.billing.base import idempotency_key as derived_key
from connector.billing.ratelimit import Budget, RateLimiter, Refusal, limiter_for_credential
from connector.config import SecretSource
from connector.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    RecordError,
    TransientError,
)
from connector.secret_shapes import SecretShape

IDEMPOTENCY_KEY_MAX = 100
CUSTOMER_ID_MAX = 50
ENTITY_ID_MAX = 50
META_KEY_MAX = 100
META_VALUE_MAX = 500
META_KEYS_MAX = 50
ENTITY_HEADER = "chargebee-business-entity-id"
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
DEFAULT_DOMAIN = "chargebee.com"
# Chargebee's API limits per site and minute: test sites 150; live sites 150 / 1000 / 3500.
TEST_SITE_REQUESTS_PER_MINUTE = 150.0
# `id[in]` takes at most this many ids per list request, and a page holds at most 100.
FETCH_BATCH = 100

# Chargebee API keys: "test_" or "live_" and an opaque run of letters and digits.
KEY_SHAPE = SecretShape(
    re.compile(r"\b(?:test|live)_[A-Za-z0-9]{24,}\b"),
    "a Chargebee API key",
    "CHARGEBEE_API_KEY",
)

RULES = TargetRules(
    system="chargebee",
    idempotency_window=timedelta(hours=24),
    idempotency_key_max=IDEMPOTENCY_KEY_MAX,
    tag_field="meta_data",
    tag_key_max=META_KEY_MAX,
    tag_value_max=META_VALUE_MAX,
    tag_keys_max=META_KEYS_MAX,
    empty_unsets=True,
    client_chosen_ids=True,
    search=False,
    separate_calls=frozenset({"billing_address"}),
)

_ID_SAFE = re.compile(r"[^A-Za-z0-9_\-]")

# The SDK (and httpx under it) is imported when a Chargebee account is first built: a
# connector billing only Stripe never pays its ~30 MiB (the peak RSS at 1,000,000 accounts
# is a target of issue 15).
if TYPE_CHECKING:
    import chargebee


# --- settings -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargebeeSettings:
    """One Chargebee billing account: a site, and the business entity it writes under."""

    name: str  # the billing account name links are keyed by
    site: str  # "acme-test": the site part of acme-test.chargebee.com
    api_key_env: str = "CHARGEBEE_API_KEY"
    api_base: str | None = None  # only for the sandbox or a proxy: http://127.0.0.1:PORT
    business_entity_id: str | None = None  # sent as chargebee-business-entity-id
    # With Customer Sharing one customer per Salesforce account serves every entity of the
    # site; without it each entity has its own customer (and its own id).
    customer_sharing: bool = False
    requests_per_minute: float = TEST_SITE_REQUESTS_PER_MINUTE
    salesforce_org_id: str | None = None  # lets find_by_salesforce_account derive the id

    def __post_init__(self) -> None:
        if not self.site and not self.api_base:
            raise ConfigError(f"billing account '{self.name}': set `site` (e.g. acme-test)")
        if self.site and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", self.site):
            raise ConfigError(
                f"billing account '{self.name}': `site` is the name before .chargebee.com, "
                f"got {self.site!r}"
            )
        entity = self.business_entity_id
        if entity is not None and not (0 < len(entity) <= ENTITY_ID_MAX):
            raise ConfigError(
                f"billing account '{self.name}': business_entity_id must be 1 to "
                f"{ENTITY_ID_MAX} characters"
            )
        if self.api_base is not None:
            url = urlsplit(self.api_base)
            if url.scheme not in ("http", "https") or not url.hostname or "." not in url.netloc:
                raise ConfigError(
                    f"billing account '{self.name}': api_base must be a URL with a dotted host "
                    f"like http://127.0.0.1:PORT (the SDK joins site and domain with a dot, so "
                    f"not localhost), got {self.api_base!r}"
                )
            if url.scheme == "http" and url.hostname not in ("127.0.0.1", "::1", "localhost"):
                raise ConfigError(
                    f"billing account '{self.name}': plain http is only allowed on loopback"
                )
        if not 0 < self.requests_per_minute <= 10_000:
            raise ConfigError(
                f"billing account '{self.name}': requests_per_minute must be in (0, 10000]"
            )


def customer_id_for(org_id: str, account_id: str, business_entity_id: str | None = None) -> str:
    """The Chargebee customer id of one Salesforce account (per entity unless shared).

    "sf-" + the account id (so an admin recognises it) + "-" + 12 hex of SHA-256 over the org,
    the entity and the account: at most 3 + 18 + 1 + 12 = 34 characters, within Chargebee's 50.
    Salesforce ids are case-sensitive in their 15-character form; the hash keeps two ids that
    differ only in case apart even where an id is compared without case.
    """
    if not org_id or not account_id:
        raise ValueError("customer_id_for needs the Salesforce org id and account id")
    digest = hashlib.sha256(
        "\0".join([org_id, business_entity_id or "", account_id]).encode("utf-8")
    ).hexdigest()[:12]
    cid = f"sf-{_ID_SAFE.sub('', account_id)[:18]}-{digest}"
    assert len(cid) <= CUSTOMER_ID_MAX
    return cid


def clean_meta_data(meta: Mapping[str, Any]) -> dict[str, str]:
    """Trim keys and values and enforce the limits; None or "" removes the key."""
    out: dict[str, str] = {}
    for key, value in meta.items():
        k = str(key).strip()
        v = "" if value is None else str(value).strip()
        if not k:
            raise InvalidRequest(
                "meta_data key is empty", code="meta_data_invalid", param="meta_data"
            )
        if len(k) > META_KEY_MAX:
            raise InvalidRequest(
                f"meta_data key {k!r} is longer than {META_KEY_MAX} characters",
                code="meta_data_invalid",
                param="meta_data",
            )
        if len(v) > META_VALUE_MAX:
            raise InvalidRequest(
                f"meta_data value of {k!r} is longer than {META_VALUE_MAX} characters",
                code="meta_data_invalid",
                param="meta_data",
            )
        out[k] = v
    if sum(1 for v in out.values() if v) > META_KEYS_MAX:
        raise InvalidRequest(
            f"more than {META_KEYS_MAX} meta_data keys", code="meta_data_invalid", param="meta_data"
        )
    return out


class ChargebeeTarget:
    """One Chargebee billing account (a site, optionally one business entity of it)."""

    rules = RULES

    def __init__(
        self,
        settings: ChargebeeSettings,
        secrets: SecretSource,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = secrets.get(settings.api_key_env)
        if not key:
            raise ConfigError(
                f"set the environment variable {settings.api_key_env} (or "
                f"{settings.api_key_env}_FILE) to the API key of Chargebee billing account "
                f"'{settings.name}' (Settings > API keys; a full-access key or one allowed to "
                "read and write customers)"
            )
        self.settings = settings
        self.calls = 0
        self.rate_limited = 0
        self._counts = threading.Lock()  # writers share the target
        # Chargebee limits a site per minute and has no per-endpoint level.
        self.limiter: RateLimiter = limiter_for_credential(
            f"chargebee:{settings.site}:{settings.api_base or ''}",
            key,
            Budget(rate=settings.requests_per_minute / 60.0),
            clock=clock,
            sleep=sleep,
        )
        import chargebee as sdk

        options: dict[str, Any] = {"connection_time_out": 10, "read_time_out": 60}
        if settings.api_base:
            url = urlsplit(settings.api_base)
            # The SDK builds `{protocol}://{site}.{domain}/api/v2`: split the host at its first
            # dot ("127" + "0.0.1:PORT" for the sandbox).
            site, _, domain = url.netloc.partition(".")
            options.update(site=site, chargebee_domain=domain, protocol=url.scheme)
            self.url = f"{url.scheme}://{url.netloc}"
            if url.scheme == "http":
                # The SDK sends https whenever this class setting is on; loopback only (checked
                # in the settings). With it off, https is still verified by httpx's defaults.
                sdk.Chargebee.verify_ca_certs = False
        else:
            options["site"] = settings.site
            self.url = f"https://{settings.site}.{DEFAULT_DOMAIN}"
        self._client = sdk.Chargebee(key, **options)

    @classmethod
    def from_config(
        cls, account: Any, secrets: SecretSource, *, salesforce_org_id: str | None = None
    ) -> ChargebeeTarget:
        """The factory for `kind: chargebee` accounts (`billing.accounts[]` in config).

        Reads the fields it needs by name: `site`, `business_entity_id`, `sharing` and
        `requests_per_minute` where the account config has them. Defaults written for Stripe
        (`api_key_env: STRIPE_API_KEY`, 20 requests a second) count only when set explicitly.
        """
        given = set(getattr(account, "model_fields_set", ()) or ())
        explicit = given or {"api_key_env", "max_requests_per_second"}  # a plain object: all
        rpm = getattr(account, "requests_per_minute", None)
        per_second = getattr(account, "max_requests_per_second", None)
        if rpm is None and per_second is not None and "max_requests_per_second" in explicit:
            rpm = float(per_second) * 60
        key_env = getattr(account, "api_key_env", None)
        settings = ChargebeeSettings(
            name=getattr(account, "name", None) or account.id,
            site=getattr(account, "site", None) or "",
            api_key_env=key_env if key_env and "api_key_env" in explicit else "CHARGEBEE_API_KEY",
            api_base=getattr(account, "api_base", None),
            business_entity_id=getattr(account, "business_entity_id", None),
            customer_sharing=getattr(account, "sharing", None) == "customer_sharing",
            requests_per_minute=float(rpm or TEST_SITE_REQUESTS_PER_MINUTE),
            salesforce_org_id=salesforce_org_id,
        )
        return cls(settings, secrets)

    @property
    def name(self) -> str:
        return self.settings.name

    def customer_id(self, org_id: str, account_id: str) -> str:
        """The id this account gives the customer of one Salesforce account."""
        entity = None if self.settings.customer_sharing else self.settings.business_entity_id
        return customer_id_for(org_id, account_id, entity)

    # --- the port ------------------------------------------------------------------------

    def create_customer(self, payload: CustomerPayload, *, idempotency_key: str) -> str:
        self._check_key(idempotency_key)
        tags = dict(payload.get(RULES.tag_field) or {})
        account_id, org_id = tags.get("salesforce_account_id"), tags.get("salesforce_org_id")
        if not account_id or not org_id:
            raise ValueError(
                "a Chargebee create needs meta_data.salesforce_account_id and salesforce_org_id "
                "(the engine tags every payload with them)"
            )
        cid = self.customer_id(str(org_id), str(account_id))
        params: dict[str, Any] = {k: v for k, v in payload.items() if v not in ("", None)}
        params["id"] = cid
        params[RULES.tag_field] = json.dumps(
            {k: v for k, v in clean_meta_data(tags).items() if v}, sort_keys=True
        )
        if isinstance(params.get("billing_address"), Mapping):
            params["billing_address"] = {
                k: v for k, v in params["billing_address"].items() if v not in ("", None)
            }
        try:
            self._call(
                lambda headers: self._client.Customer.create(params, headers),
                idempotency_key=idempotency_key,
            )
            return cid
        except InvalidRequest as exc:
            if not _id_taken(exc):
                raise
        return self._adopt(cid, payload, str(account_id), idempotency_key)

    def update_customer(
        self, customer_id: str, payload: CustomerPayload, *, idempotency_key: str
    ) -> None:
        self._check_key(idempotency_key)
        main = {k: v for k, v in payload.items() if k != "billing_address"}
        address = payload.get("billing_address")
        current: RemoteCustomer | None = None
        if RULES.tag_field in main or address is not None:
            # Chargebee replaces meta_data and the billing address as a whole; keys the mapping
            # does not name must survive, so the change is laid over what Chargebee holds now.
            current = self.fetch_customer(customer_id)
            if current is None or current.deleted:
                raise CustomerMissing(
                    f"customer {customer_id} does not exist in Chargebee billing account "
                    f"'{self.name}'",
                    customer_id=customer_id,
                    billing_account=self.name,
                )
        applied: dict[str, Any] = {}
        if main:
            params = dict(main)
            if RULES.tag_field in params:
                assert current is not None
                merged = {**current.metadata, **clean_meta_data(params[RULES.tag_field] or {})}
                params[RULES.tag_field] = json.dumps(
                    {k: v for k, v in merged.items() if v}, sort_keys=True
                )
            self._call(
                lambda headers: self._client.Customer.update(customer_id, params, headers),
                idempotency_key=idempotency_key,
                customer_id=customer_id,
            )
            applied = main
        if address is None:
            return
        assert current is not None
        have = dict(current.payload.get("billing_address") or {})
        full = {k: have[k] for k in _ADDRESS_KEYS if have.get(k) not in (None, "")}
        for k, v in dict(address).items():
            full[k] = "" if v is None else v
        try:
            self._call(
                lambda headers: self._client.Customer.update_billing_info(
                    customer_id,
                    {"billing_address": full},
                    headers,
                ),
                # A key of its own: the first call's key already names the first call.
                idempotency_key=derived_key(idempotency_key, "billing_address"),
                customer_id=customer_id,
            )
        except RecordError as exc:
            if not applied:
                raise
            raise PartiallyRefused(
                f"Chargebee billing account '{self.name}' applied the customer fields of "
                f"{customer_id} but refused its billing address: {exc}",
                customer_id=customer_id,
                applied=applied,
                pending={"billing_address": address},
                cause=exc,
            ) from exc
        except ConnectorError as exc:
            if not applied:
                raise
            raise PartiallyApplied(
                f"Chargebee billing account '{self.name}' applied the customer fields of "
                f"{customer_id}; its billing address is still to be sent: {exc}",
                customer_id=customer_id,
                applied=applied,
                pending={"billing_address": address},
                cause=exc,
            ) from exc

    def fetch_customers(self, ids: Sequence[str]) -> dict[str, RemoteCustomer | None]:
        # One list request per 100 ids (`id[in]`) instead of one retrieve each.
        wanted = list(dict.fromkeys(ids))
        out: dict[str, RemoteCustomer | None] = dict.fromkeys(wanted)
        for start in range(0, len(wanted), FETCH_BATCH):
            chunk = wanted[start : start + FETCH_BATCH]
            offset: str | None = None
            while True:
                # Sent as the JSON array Chargebee documents (the SDK would send a list as its
                # Python repr).
                params: dict[str, Any] = {
                    "id": {"in": json.dumps(chunk)},
                    "limit": FETCH_BATCH,
                    # A deleted customer still exists for the planner: it must not be re-created.
                    "include_deleted": True,
                }
                if offset:
                    params["offset"] = offset
                page = self._call(
                    lambda headers, p=params: self._client.Customer.list(p, headers)  # type: ignore[misc]
                )
                for entry in page.list:
                    remote = _remote(entry.customer.raw_data)
                    if remote.id in out:
                        out[remote.id] = remote
                offset = page.next_offset
                if not offset:
                    break
        return out

    def fetch_customer(self, customer_id: str) -> RemoteCustomer | None:
        try:
            got = self._call(
                lambda headers: self._client.Customer.retrieve(customer_id, headers),
                customer_id=customer_id,
            )
        except CustomerMissing:
            # Chargebee answers 404 for a deleted customer too; only a list that includes
            # deleted ones tells the two apart (one more call, for missing customers only).
            found = self._call(
                lambda headers: self._client.Customer.list(
                    {"id": {"is": customer_id}, "include_deleted": True}, headers
                )
            )
            for entry in found.list:
                if entry.customer.id == customer_id:
                    return _remote(entry.customer.raw_data)
            return None
        return _remote(got.customer.raw_data)

    def find_by_salesforce_account(self, account_id: str) -> list[RemoteCustomer]:
        # Chargebee cannot search meta_data (rules.search is False); the id is derived, so one
        # retrieve finds the customer when the org is known.
        org_id = self.settings.salesforce_org_id
        if not org_id:
            return []
        remote = self.fetch_customer(self.customer_id(org_id, account_id))
        if remote is None or remote.metadata.get("salesforce_account_id") != account_id:
            return []
        return [remote]

    # --- mechanics -----------------------------------------------------------------------

    def _adopt(self, cid: str, payload: CustomerPayload, account_id: str, key: str) -> str:
        """The id is taken: a crash after an earlier create, or someone else's customer."""
        remote = self.fetch_customer(cid)
        if remote is None:
            raise InvalidRequest(
                f"customer id {cid} is taken on the Chargebee site of billing account "
                f"'{self.name}' by a customer this business entity cannot see (one of another "
                "entity without customer sharing); nothing was changed",
                code="customer_id_taken",
                param="id",
            )
        owner = remote.metadata.get("salesforce_account_id")
        if remote.deleted:
            raise InvalidRequest(
                f"customer {cid} of billing account '{self.name}' was deleted in Chargebee and "
                "its id stays taken; the connector does not re-create or restore it. Restore it "
                "in Chargebee, or link the Salesforce account to another customer",
                code="customer_deleted",
                param="id",
            )
        if owner != account_id:
            raise InvalidRequest(
                f"customer id {cid} in Chargebee billing account '{self.name}' belongs to "
                f"{'Salesforce account ' + owner if owner else 'a customer not made by the connector'}"
                f", not to {account_id}; nothing was changed. Rename or remove that customer in "
                "Chargebee, then sync again",
                code="customer_id_taken",
                param="id",
            )
        # Ours (an earlier create whose answer was lost): bring it to this payload, so the link
        # never claims fields Chargebee does not hold.
        changes = _differences(remote, payload)
        if changes:
            try:
                self.update_customer(cid, changes, idempotency_key=derived_key(key, "adopt"))
            except (PartiallyApplied, PartiallyRefused) as exc:
                # What Chargebee holds now is the whole payload except what is still pending.
                exc.applied = {k: v for k, v in payload.items() if k not in exc.pending}
                raise
        return cid

    @staticmethod
    def _check_key(key: str) -> None:
        # Never cut a key: a cut key can name an older write and replay it instead of this one.
        if not key or len(key) > IDEMPOTENCY_KEY_MAX:
            raise ValueError(
                f"idempotency key of {len(key)} characters; Chargebee accepts 1 to "
                f"{IDEMPOTENCY_KEY_MAX}"
            )

    def _call(
        self,
        fn: Callable[[dict[str, str]], Any],
        *,
        idempotency_key: str | None = None,
        customer_id: str | None = None,
    ) -> Any:
        headers: dict[str, str] = {}
        if self.settings.business_entity_id:
            headers[ENTITY_HEADER] = self.settings.business_entity_id
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key

        def send() -> Any:
            with self._counts:
                self.calls += 1
            return fn(dict(headers))

        def counted() -> None:
            with self._counts:
                self.rate_limited += 1

        import chargebee
        import httpx

        # 429 (api_request_limit_exceeded or lock_timeout) is retried in the limiter, same key.
        try:
            return self.limiter.call("customers", send, _refusal, who=self.name, on_refused=counted)
        except chargebee.APIError as exc:
            raise self._translate(exc, customer_id) from None
        except httpx.ConnectError as exc:
            raise BillingUnreachable(
                f"cannot connect to Chargebee billing account '{self.name}' at {self.url} "
                f"({exc}); check the network, a proxy or firewall, and the site name",
                billing_account=self.name,
                url=self.url,
            ) from None
        except httpx.HTTPError as exc:
            # Connected, then the connection dropped or timed out: the request may have been
            # applied; the same idempotency key makes trying again later safe.
            raise TransientError(
                f"connection to Chargebee billing account '{self.name}' at {self.url} was "
                f"interrupted ({type(exc).__name__}: {exc})",
                code="connection",
            ) from None
        except (TypeError, ValueError, AttributeError, KeyError, ConnectorError):
            raise  # a bug here, or RateLimited from the limiter: not an unreadable answer
        except Exception as exc:
            # The SDK raises a plain Exception for an answer that is not Chargebee's JSON
            # (a proxy's 502 page, a 503 during maintenance).
            raise TransientError(
                f"Chargebee billing account '{self.name}' gave an unreadable answer: "
                f"{str(exc)[:300]}",
                code="bad_answer",
            ) from None

    def _translate(self, exc: chargebee.APIError, customer_id: str | None) -> Exception:
        status, code = exc.http_status_code, exc.api_error_code or "invalid_request"
        message = exc.json_obj.get("message") or str(exc)
        if status == 401:
            return AuthenticationError(
                f"Chargebee refused the API key of billing account '{self.name}' "
                f"(check {self.settings.api_key_env}): {message}"
            )
        if status == 403:
            return AuthenticationError(
                f"the Chargebee API key of billing account '{self.name}' lacks a permission: "
                f"{message}. It needs read and write access to customers"
            )
        if status == 404 and customer_id is not None:
            return CustomerMissing(
                f"customer {customer_id} does not exist in Chargebee billing account "
                f"'{self.name}'"
                + (
                    f" (or is not shared with business entity {self.settings.business_entity_id})"
                    if self.settings.business_entity_id and not self.settings.customer_sharing
                    else ""
                ),
                customer_id=customer_id,
                billing_account=self.name,
            )
        if status >= 500:
            return TransientError(f"Chargebee error {status} ({code}): {message}", code=code)
        return InvalidRequest(
            f"Chargebee refused the request of billing account '{self.name}': {message}",
            code=code,
            param=exc.param,
        )


_ADDRESS_KEYS = (
    "first_name",
    "last_name",
    "email",
    "company",
    "phone",
    "line1",
    "line2",
    "line3",
    "city",
    "state_code",
    "state",
    "zip",
    "country",
)


def _id_taken(exc: InvalidRequest) -> bool:
    # duplicate_entry on `id`; or our key already used with another body (a retried create
    # whose payload changed meanwhile): either way the deterministic id says who it is.
    return (exc.code == "duplicate_entry" and exc.param == "id") or "idempotency" in str(
        exc
    ).lower()


def _remote(data: Mapping[str, Any]) -> RemoteCustomer:
    meta = data.get("meta_data") or {}
    return RemoteCustomer(
        id=str(data["id"]),
        payload=dict(data),
        deleted=bool(data.get("deleted")),
        metadata={str(k): "" if v is None else str(v) for k, v in meta.items()},
    )


def _differences(remote: RemoteCustomer, payload: CustomerPayload) -> dict[str, Any]:
    """The part of `payload` the remote customer does not hold yet."""
    out: dict[str, Any] = {}
    for key, want in payload.items():
        if key == RULES.tag_field:
            want_meta = clean_meta_data(want or {})
            if any(remote.metadata.get(k, "") != v for k, v in want_meta.items()):
                out[key] = want_meta
        elif key == "billing_address":
            have = remote.payload.get("billing_address") or {}
            sub = {k: v for k, v in dict(want or {}).items() if (have.get(k) or "") != (v or "")}
            if sub:
                out[key] = sub
        elif (remote.payload.get(key) or "") != (want or ""):
            out[key] = want
    return out


def _refusal(exc: BaseException) -> Refusal | None:
    import chargebee

    if not isinstance(exc, chargebee.APIError) or exc.http_status_code != 429:
        return None
    return Refusal(
        code=exc.api_error_code or "api_request_limit_exceeded", retry_after=_retry_after(exc)
    )


def _retry_after(exc: chargebee.APIError) -> float | None:
    headers = exc.http_headers or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return min(60.0, float(value)) if value else None
    except ValueError:
        return None
