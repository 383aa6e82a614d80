"""Pydantic models of config.yaml, and the secrets that come only from the environment.

What this module must never do: read a secret from YAML. A config file that holds something
that looks like a key, token or password is refused with the variable to use instead. Secrets
are read from an environment variable `NAME` or from the file named by `NAME_FILE`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connector.errors import ConfigError
from connector.log import REDACTOR
from connector.routing import RoutingConfig, check_routing
from connector.secret_shapes import find_secret
from connector.sfid import ORGANIZATION_PREFIX, normalize_sf_id
from connector.yaml_source import PositionedYaml, load_positioned


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_loopback_url(url: str) -> bool:
    return (urlparse(url).hostname or "") in LOOPBACK_HOSTS


class SalesforceConfig(_Model):
    """Where the org is and how to log in. Passwords, tokens and keys come from the environment."""

    auth: Literal["access_token", "password", "jwt", "client_credentials"] = "jwt"
    # https://<mydomain>.my.salesforce.com, or http://127.0.0.1:PORT for the sandbox (loopback only).
    instance_url: str | None = None
    # Login host: "login" (production), "test" (sandbox orgs) or a My Domain like "acme.my".
    domain: str = "login"
    username: str | None = None
    # The connected app's consumer key is an identifier, not a secret; its secret is in the env.
    consumer_key: str | None = None
    api_version: str = "62.0"
    # The org's 15- or 18-character id (00D...). Read from the session when not given.
    org_id: str | None = None
    # Deprecated (one release): the first billing account's `writeback_field`.
    stripe_id_field: str | None = None
    # Extra SOQL condition ANDed to StatusCode = 'Activated', e.g. "Type = 'New Business'".
    order_filter: str | None = None
    # Records per query page (Salesforce's Sforce-Query-Options batchSize, 200-2000).
    page_size: int = Field(default=2000, ge=200, le=2000)
    # Records whose SystemModstamp is this close to the cursor are re-read and de-duplicated.
    overlap_seconds: int = Field(default=300, ge=0, le=86400)
    # Stop a run cleanly before it uses more than this share of the org's remaining daily calls.
    api_budget_share: float = Field(default=0.5, gt=0, le=1)
    writeback_batch_size: int = Field(default=200, ge=1, le=200)
    # A full read (backfill, re-check, first sync) of more orders than this goes on through a
    # Bulk API 2.0 query job after its first page; 0 keeps every read on the REST query API.
    bulk_threshold: int = Field(default=50_000, ge=0)
    # Records per Bulk API 2.0 result set (one call each; the set is held in memory at once).
    bulk_page_size: int = Field(default=10_000, ge=200, le=50_000)
    # Seconds simple-salesforce waits before polling a Bulk query job (0 polls at once).
    bulk_poll_seconds: float = Field(default=5.0, ge=0, le=60)

    @field_validator("instance_url")
    @classmethod
    def _https_or_loopback(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parsed = urlparse(v)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ValueError("must be a URL like https://acme.my.salesforce.com")
        if parsed.scheme == "http" and parsed.hostname not in LOOPBACK_HOSTS:
            raise ValueError("plain http is only allowed on loopback (the sandbox); use https")
        return v.rstrip("/")

    @field_validator("org_id")
    @classmethod
    def _org_id(cls, v: str | None) -> str | None:
        # Both forms are shown in Setup; the store and metadata hold the 18-character one.
        return None if v is None else normalize_sf_id(v, prefix=ORGANIZATION_PREFIX, what="org id")

    @model_validator(mode="after")
    def _auth_needs(self) -> SalesforceConfig:
        needs: dict[str, list[str]] = {
            "access_token": ["instance_url"],
            "password": ["username", "consumer_key"],
            "jwt": ["username", "consumer_key"],
            "client_credentials": ["consumer_key"],
        }
        missing = [k for k in needs[self.auth] if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"auth '{self.auth}' needs {', '.join(missing)}")
        return self


# The Account field that received the customer id before it was set per billing account.
DEFAULT_WRITEBACK_FIELD = "Stripe_Customer_Id__c"
_SF_FIELD = r"^[A-Za-z][A-Za-z0-9_]*$"
_ACCOUNT_ID = r"^acct_[A-Za-z0-9]+$"
_ACCOUNT_PATH = r"^acct_[A-Za-z0-9]+(/acct_[A-Za-z0-9]+)?$"
_API_VERSION = r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$"
# Chargebee business entity ids (Chargebee's ids: letters, digits, '_', '-', '.' and '@'; 50
# at most).
_ENTITY_ID = r"^[A-Za-z0-9_.@-]+$"
ENTITY_ID_MAX = 50


# Enough for Stripe's live cap (100 a second) at 250 ms a request, with room for jitter.
DEFAULT_MAX_IN_FLIGHT = 32
_ENDPOINT_NAME = re.compile(r"^[a-z_]+\.[a-z_]+$")


class BillingAccountConfig(_Model):
    """One billing account. Links are keyed by its name (`name`, or `id` as before)."""

    id: str = Field(
        default="default",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        validation_alias=AliasChoices("name", "id"),
    )
    # Which kind of billing system this is: a key of connector.billing.TARGET_KINDS.
    kind: str = "stripe"
    # Name of the environment variable holding the account's secret or restricted key.
    api_key_env: str = "STRIPE_API_KEY"
    # Only for the sandbox or a proxy: http://127.0.0.1:PORT.
    api_base: str | None = None
    # Which Stripe account the key acts on, when it is not the key's own (kind stripe):
    # an organization key (sk_org_...) names it in `stripe_context` (sent as Stripe-Context:
    # acct_..., or acct_platform/acct_connected); a Connect platform key names a connected
    # account in `stripe_account` (sent as Stripe-Account). Stripe ignores Stripe-Account for
    # organization keys.
    stripe_context: str | None = Field(default=None, pattern=_ACCOUNT_PATH, max_length=200)
    stripe_account: str | None = Field(default=None, pattern=_ACCOUNT_ID, max_length=80)
    # The Stripe API version every request pins (Stripe-Version). Unset: the connector's pinned
    # version. Organization keys require one, and what a sharing group shares depends on it.
    stripe_version: str | None = Field(default=None, pattern=_API_VERSION)
    # Writes per second for this account (Stripe test mode allows about 25, live about 100).
    max_requests_per_second: float = Field(default=20, gt=0, le=1000)
    # Per-endpoint budgets, requests a second, for accounts whose limits Stripe raised:
    # {customers.create: 100, customers.update: 100}. Unnamed endpoints keep Stripe's default
    # (25 a second, customers.search 20).
    endpoint_limits: dict[str, float] = Field(default_factory=dict)
    # Most requests in flight at once for this account; the pool is sized from the pace and
    # the latency seen, up to this. 1 sends one request at a time.
    max_in_flight: int = Field(default=DEFAULT_MAX_IN_FLIGHT, ge=1, le=256)
    max_network_retries: int = Field(default=2, ge=0, le=10)
    # The Account field that receives this account's customer id, or null for none. Unset: the
    # first account writes to Stripe_Customer_Id__c if it is a Stripe account (as before), the
    # others write nothing.
    writeback_field: str | None = Field(default=None, pattern=_SF_FIELD, max_length=80)

    # --- kind chargebee only (refused on other kinds, as the Stripe fields are on chargebee) ---
    # The site: `acme-test` of acme-test.chargebee.com.
    site: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$", max_length=100)
    # The one business entity this account writes under (sent as chargebee-business-entity-id).
    business_entity_id: str | None = Field(
        default=None, pattern=_ENTITY_ID, min_length=1, max_length=ENTITY_ID_MAX
    )
    # Several entities of the site: the account becomes one billing account per entity, named
    # NAME.ENTITY, which routing rules name to pick the entity of an order.
    business_entities: tuple[str, ...] | None = Field(default=None, min_length=1)
    # customer_sharing: one customer per Salesforce account for every entity (Chargebee's
    # Customer Sharing must be on); none: one customer per entity, each with its own id.
    sharing: Literal["customer_sharing", "none"] | None = None
    # With customer sharing: the entity new customers are created under. Unset: the entity of
    # the account's first routed order.
    primary_entity: str | None = None
    # Requests a minute for this site. Unset: 150, a Chargebee test site's limit.
    requests_per_minute: float | None = Field(default=None, gt=0, le=10_000)

    @property
    def name(self) -> str:
        return self.id

    @field_validator("stripe_context", "stripe_account", "stripe_version")
    @classmethod
    def _stripe_only(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if v is not None and kind is not None and kind != "stripe":
            raise ValueError(
                f"{info.field_name} is a Stripe setting; this account is of kind {kind!r}: "
                "remove it (a Chargebee account names its site and business entities)"
            )
        return v

    @field_validator(
        "site",
        "business_entity_id",
        "business_entities",
        "sharing",
        "primary_entity",
        "requests_per_minute",
    )
    @classmethod
    def _chargebee_only(cls, v: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if v is not None and kind is not None and kind != "chargebee":
            raise ValueError(
                f"{info.field_name} is a Chargebee setting; this account is of kind {kind!r}: "
                "remove it, or set kind: chargebee"
                + (
                    " (a Stripe account's pace is max_requests_per_second)"
                    if info.field_name == "requests_per_minute"
                    else ""
                )
            )
        return v

    @field_validator("business_entities")
    @classmethod
    def _entity_ids(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        for entity in v:
            if not re.fullmatch(_ENTITY_ID, entity) or len(entity) > ENTITY_ID_MAX:
                raise ValueError(
                    f"business entity id {entity!r}: Chargebee ids are 1 to {ENTITY_ID_MAX} "
                    "letters, digits, '_', '-', '.' or '@'"
                )
        if len(set(v)) != len(v):
            raise ValueError("list each business entity once")
        return v

    @model_validator(mode="after")
    def _entities_fit_together(self) -> BillingAccountConfig:
        if self.kind != "chargebee":
            return self
        if self.business_entities is not None and self.business_entity_id is not None:
            raise ValueError(
                "set business_entities (several entities, routed per order) or "
                "business_entity_id (one), not both"
            )
        if self.primary_entity is not None:
            if self.sharing != "customer_sharing":
                raise ValueError(
                    "primary_entity is where shared customers are created; it needs "
                    "sharing: customer_sharing"
                )
            entities = self.business_entities or (
                (self.business_entity_id,) if self.business_entity_id else ()
            )
            if self.primary_entity not in entities:
                raise ValueError(
                    f"primary_entity {self.primary_entity!r} is not one of this account's "
                    f"business entities ({', '.join(entities) or 'none configured'})"
                )
        for entity in self.business_entities or ():
            if len(self.entity_account_name(entity)) > 64:
                raise ValueError(
                    f"{self.entity_account_name(entity)!r} (name.entity, the billing account "
                    "of that entity) is longer than 64 characters; use a shorter account name"
                )
        return self

    def entity_account_name(self, entity: str) -> str:
        """The billing account of one of this account's business entities (routing names it)."""
        return f"{self.id}.{entity}"

    def entity_accounts(self) -> list[BillingAccountConfig]:
        """This account as the engine runs it: one billing account per business entity (each
        with that entity's id), or itself when it names one entity or none."""
        if not self.business_entities:
            return [self]
        return [
            self.model_copy(
                update={
                    "id": self.entity_account_name(entity),
                    "business_entity_id": entity,
                    "business_entities": None,
                    "primary_entity": None,
                }
            )
            for entity in self.business_entities
        ]

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        # Imported here: the adapters import this module for their config types.
        from connector.billing import TARGET_KINDS

        if v not in TARGET_KINDS:
            raise ValueError(f"unknown kind {v!r}; known: {', '.join(sorted(TARGET_KINDS))}")
        return v

    @field_validator("endpoint_limits")
    @classmethod
    def _endpoint_limits(cls, v: dict[str, float]) -> dict[str, float]:
        for name, rate in v.items():
            if not _ENDPOINT_NAME.match(name):
                raise ValueError(
                    f"endpoint {name!r}: name endpoints like customers.create or customers.update"
                )
            if not 0 < rate <= 10_000:
                raise ValueError(f"endpoint {name}: requests a second must be in (0, 10000]")
        return v

    @model_validator(mode="after")
    def _one_way_to_name_the_account(self) -> BillingAccountConfig:
        if self.stripe_context and self.stripe_account:
            raise ValueError(
                "set stripe_context (organization keys) or stripe_account (Connect platform "
                "keys), not both: Stripe-Context supersedes Stripe-Account"
            )
        return self

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parsed = urlparse(v)
        if parsed.scheme == "http" and parsed.hostname not in LOOPBACK_HOSTS:
            raise ValueError("plain http is only allowed on loopback (the sandbox); use https")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be a URL like https://api.stripe.com")
        return v.rstrip("/")


class SharingGroupConfig(_Model):
    """Billing accounts that share customers (Stripe Organizations' customer sharing): one
    Salesforce account has exactly one customer in the group, used from every member by the
    same id. Written as a list of account names, or with a name and a primary account."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    accounts: tuple[str, ...] = Field(min_length=2)
    # Where a customer is created when none exists yet; unset: the account of the first order.
    primary: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_list_is_the_accounts(cls, data: Any) -> Any:
        return {"accounts": data} if isinstance(data, list | tuple) else data

    @model_validator(mode="after")
    def _primary_is_a_member(self) -> SharingGroupConfig:
        if len(set(self.accounts)) != len(self.accounts):
            raise ValueError("a sharing group lists each billing account once")
        if self.primary is not None and self.primary not in self.accounts:
            raise ValueError(
                f"primary {self.primary!r} is not one of the group's accounts "
                f"({', '.join(self.accounts)})"
            )
        return self

    @property
    def label(self) -> str:
        return self.name or "+".join(self.accounts)


class BillingConfig(_Model):
    # Deprecated: the kind of every account that does not name its own `kind`.
    target: str | None = None
    accounts: tuple[BillingAccountConfig, ...] = (BillingAccountConfig(),)
    sharing_groups: tuple[SharingGroupConfig, ...] = ()

    @model_validator(mode="after")
    def _groups_of_known_accounts(self) -> BillingConfig:
        self._expand_business_entities()
        kinds = {a.id: a.kind for a in self.accounts}
        seen: dict[str, str] = {}
        labels: set[str] = set()
        for group in self.sharing_groups:
            # A group is one daemon partition, named (in its lock, logs and metrics) by its label.
            if group.label in kinds or group.label in labels:
                raise ValueError(
                    f"sharing group name {group.label!r} is also the name of a billing account "
                    "or of another group; give the group a name of its own"
                )
            labels.add(group.label)
            for name in group.accounts:
                if name not in kinds:
                    raise ValueError(
                        f"sharing group {group.label}: {name!r} is not in billing.accounts "
                        f"({', '.join(kinds)})"
                    )
                if name in seen:
                    # Stripe: "An account can belong to only one sharing group."
                    raise ValueError(
                        f"billing account {name!r} is in two sharing groups ({seen[name]} and "
                        f"{group.label}); an account belongs to one at most"
                    )
                seen[name] = group.label
            if len({kinds[n] for n in group.accounts}) > 1:
                raise ValueError(
                    f"sharing group {group.label}: its accounts are of different kinds; only "
                    "accounts of one billing system share customers"
                )
        fields: dict[str, str] = {}
        for a in self.accounts:
            if not a.writeback_field:
                continue
            owner = fields.setdefault(a.writeback_field.casefold(), a.id)
            mine = self.group_of(a.id)
            if owner != a.id and (mine is None or owner not in mine.accounts):
                raise ValueError(
                    "two billing accounts write their customer ids to the same Account field "
                    f"({a.writeback_field}); only accounts of one sharing group, which share "
                    "one customer id, may"
                )
        return self

    def _expand_business_entities(self) -> None:
        """A Chargebee account with `business_entities` becomes one billing account per entity
        (NAME.ENTITY: routing rules pick the entity of each order, links and cursors are kept
        per entity), and with `sharing: customer_sharing` those accounts form a sharing group
        (one customer per Salesforce account, created under the primary entity, used from the
        others). Everything after config (routing, partitions, the engine) sees only these."""
        if not any(a.business_entities for a in self.accounts):
            return
        expanded: list[BillingAccountConfig] = []
        groups = list(self.sharing_groups)
        configured = {a.id for a in self.accounts}
        for account in self.accounts:
            mine = account.entity_accounts()
            for entity_account in mine:
                if entity_account is not account and entity_account.id in configured:
                    raise ValueError(
                        f"billing account {account.id!r}: its entity account "
                        f"{entity_account.id!r} has the name of another billing account"
                    )
            expanded.extend(mine)
            if len(mine) > 1 and account.sharing == "customer_sharing":
                groups.append(
                    SharingGroupConfig(
                        name=account.id,
                        accounts=tuple(a.id for a in mine),
                        primary=(
                            account.entity_account_name(account.primary_entity)
                            if account.primary_entity
                            else None
                        ),
                    )
                )
            elif len(mine) > 1 and account.writeback_field:
                raise ValueError(
                    f"billing account {account.id!r}: without customer sharing each business "
                    f"entity has its own customer, and one Account field "
                    f"({account.writeback_field}) cannot hold them all; set writeback_field: "
                    "null, or sharing: customer_sharing"
                )
        # Validated already, as configured; frozen models are built once, here included.
        object.__setattr__(self, "accounts", tuple(expanded))
        object.__setattr__(self, "sharing_groups", tuple(groups))

    def group_of(self, account: str) -> SharingGroupConfig | None:
        return next((g for g in self.sharing_groups if account in g.accounts), None)

    @field_validator("accounts")
    @classmethod
    def _unique(cls, v: tuple[BillingAccountConfig, ...]) -> tuple[BillingAccountConfig, ...]:
        if not v:
            raise ValueError("at least one billing account is needed")
        ids = [a.id for a in v]
        if len(set(ids)) != len(ids):
            raise ValueError("billing account names must be unique")
        return v

    def writeback_fields(self) -> dict[str, str]:
        """Billing account name -> the Account field that receives its customer id."""
        return {a.id: a.writeback_field for a in self.accounts if a.writeback_field}

    def account(self, name: str) -> BillingAccountConfig:
        return next(a for a in self.accounts if a.id == name)


class StateConfig(_Model):
    # SQLite file by default; postgresql+psycopg://user@host/db for production and replicas.
    url: str = "sqlite:///state.db"
    auto_migrate: bool = True


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


# --- the daemon (`billing-connector run`) -----------------------------------------------------

_EVERY = re.compile(r"^\s*(\d+)\s*(s|m|h)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


class ScheduleConfig(_Model):
    """When `run` syncs: every N seconds/minutes/hours, or on a crontab line (UTC)."""

    # "30s", "5m", "1h". The default when neither `every` nor `cron` is given is 5m.
    every: str | None = None
    # Five crontab fields, e.g. "*/5 * * * *" (minute hour day month weekday).
    cron: str | None = None
    # "HH:MM" (UTC): once a day, re-evaluate every linked account (a full recheck). Off when null.
    nightly_recheck: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @field_validator("every")
    @classmethod
    def _every(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _EVERY.match(v)
        if not m or int(m.group(1)) == 0:
            raise ValueError("must be a duration like 30s, 5m or 1h")
        return v.strip()

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a crontab line of five fields ({exc})") from None
        return v.strip()

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("give either 'every' or 'cron', not both")
        return self

    @property
    def interval_seconds(self) -> int | None:
        """The interval of an `every` schedule (the default 5m when neither is set)."""
        if self.cron is not None:
            return None
        m = _EVERY.match(self.every or "5m")
        assert m is not None
        return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class HealthConfig(_Model):
    """The /livez, /readyz and /metrics endpoint; `--health-port` overrides `port`."""

    port: int | None = Field(default=None, ge=1, le=65535)
    # Loopback unless said otherwise: metrics name accounts and error counts.
    host: str = "127.0.0.1"
    # /readyz is ready when every partition's last run succeeded within this many intervals.
    ready_within_intervals: float = Field(default=2, gt=0)


class AlertsConfig(_Model):
    """Alerts to a Slack-compatible webhook. The URL holds a token, so it comes from the
    environment variable named here (or the file named by `<NAME>_FILE`), never from YAML."""

    webhook_url_env: str = Field(
        default="BILLING_CONNECTOR_ALERT_WEBHOOK_URL", pattern=r"^[A-Z_][A-Z0-9_]*$"
    )
    # Unhealthy when more than this share of a run's records failed.
    failure_ratio: float = Field(default=0.2, ge=0, le=1)
    # Unhealthy when less than this share of the org's daily API requests remains.
    api_budget_low: float = Field(default=0.1, ge=0, le=1)
    timeout_seconds: float = Field(default=5, gt=0, le=60)


class Config(_Model):
    salesforce: SalesforceConfig
    billing: BillingConfig = BillingConfig()
    # Which billing account each order goes to; None: every order to every account.
    routing: RoutingConfig | None = None
    state: StateConfig = StateConfig()
    mappings_dir: Path = Path("mappings")
    log: LogConfig = LogConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    health: HealthConfig = HealthConfig()
    alerts: AlertsConfig = AlertsConfig()
    # Where the file was read from; relative paths (state, mappings) resolve against its folder.
    source_file: Path | None = Field(default=None, exclude=True)
    # Deprecated settings this file still uses, as "file:line: what to write instead".
    _deprecations: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _settings_of_the_previous_release(cls, data: Any) -> Any:
        """Map the one-Stripe-account settings onto billing accounts (accepted for one release):
        `salesforce.stripe_id_field` is the first account's `writeback_field`, `billing.target`
        the kind of accounts that name none. Unset, a first account of kind stripe writes its id
        to Stripe_Customer_Id__c, as before; other kinds write back where they say."""
        if not isinstance(data, dict):
            return data
        sf = data.get("salesforce")
        legacy = sf.get("stripe_id_field") if isinstance(sf, dict) else None
        billing = data.get("billing")
        billing = dict(billing) if isinstance(billing, dict) else {} if billing is None else billing
        if not isinstance(billing, dict):
            return data
        accounts = billing.get("accounts", [{}])
        if not isinstance(accounts, list | tuple) or not accounts:
            return data
        accounts = [dict(a) if isinstance(a, dict) else a for a in accounts]
        first = accounts[0]
        target = billing.get("target")
        if isinstance(first, dict):
            separate = (
                first.get("kind", target) == "chargebee"
                and isinstance(first.get("business_entities"), list | tuple)
                and len(first["business_entities"]) > 1
                and first.get("sharing") != "customer_sharing"
            )
            stripe = first.get("kind", target or "stripe") == "stripe"
            if "writeback_field" not in first and not separate and (stripe or legacy):
                # (entities without sharing: a customer each, which no one field can hold).
                # Stripe_Customer_Id__c is the field Stripe's own connector package adds; a
                # Chargebee id in it would mislead whoever reads it, so other kinds write back
                # only to a field they name.
                first["writeback_field"] = legacy or DEFAULT_WRITEBACK_FIELD
            elif legacy and first["writeback_field"] != legacy:
                raise ValueError(
                    "salesforce.stripe_id_field and billing.accounts[0].writeback_field disagree; "
                    "keep only writeback_field"
                )
        if isinstance(target, str):
            for account in accounts:
                if isinstance(account, dict):
                    account.setdefault("kind", target)
        billing["accounts"] = accounts
        return {**data, "billing": billing}

    def resolve_path(self, p: Path) -> Path:
        if p.is_absolute() or self.source_file is None:
            return p
        return (self.source_file.parent / p).resolve()

    @property
    def deprecations(self) -> tuple[str, ...]:
        """Settings of the previous release this file still uses, with what to write instead."""
        return self._deprecations

    @property
    def mappings_path(self) -> Path:
        return self.resolve_path(self.mappings_dir)

    @property
    def state_url(self) -> str:
        url = self.state.url
        prefix = "sqlite:///"
        if (
            url.startswith(prefix)
            and not url.startswith("sqlite:////")
            and url != "sqlite:///:memory:"
        ):
            return prefix + str(self.resolve_path(Path(url[len(prefix) :])))
        return url


# --- secrets -------------------------------------------------------------------------------

_SECRET_KEYS = {
    "password": "SALESFORCE_PASSWORD",
    "security_token": "SALESFORCE_SECURITY_TOKEN",
    "consumer_secret": "SALESFORCE_CONSUMER_SECRET",
    "client_secret": "SALESFORCE_CONSUMER_SECRET",
    "access_token": "SALESFORCE_ACCESS_TOKEN",
    "session_id": "SALESFORCE_ACCESS_TOKEN",
    "private_key": "SALESFORCE_PRIVATE_KEY_FILE",
    "api_key": "STRIPE_API_KEY",
    "secret_key": "STRIPE_API_KEY",
    "webhook_url": "BILLING_CONNECTOR_ALERT_WEBHOOK_URL",
}


def _refuse_literal_secrets(doc: PositionedYaml) -> None:
    def visit(node: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in _SECRET_KEYS and v not in (None, ""):
                    pos = doc.where((*path, k))
                    raise ConfigError(
                        f"secrets are never read from config files; remove '{k}' and set the "
                        f"environment variable {_SECRET_KEYS[k]} (or {_SECRET_KEYS[k]}_FILE naming a file)",
                        file=doc.file,
                        line=pos.line,
                        column=pos.column,
                        key=".".join(map(str, (*path, k))),
                    )
                visit(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                visit(v, (*path, i))
        elif isinstance(node, str):
            found = find_secret(node)
            if found is not None:
                shape = found[0]
                pos = doc.where(path)
                raise ConfigError(
                    f"this value looks like a secret ({shape.what}); secrets are never read from "
                    f"config files, set the environment variable {shape.env} "
                    f"(or {shape.alternative()}) instead",
                    file=doc.file,
                    line=pos.line,
                    column=pos.column,
                    key=".".join(map(str, path)),
                )

    visit(doc.data, ())
    _refuse_secrets_in_comments(doc)


def _refuse_secrets_in_comments(doc: PositionedYaml) -> None:
    """A key commented out is still a key in the file (and in git, backups, tickets): refused
    like one in a value. Values were checked above; what is left to match is comments."""
    try:
        text = doc.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return  # load_positioned read it a moment ago; nothing more to learn here
    for number, line in enumerate(text.splitlines(), start=1):
        found = find_secret(line)
        if found is None:
            continue
        shape, offset = found
        raise ConfigError(
            f"this line holds something shaped like a secret ({shape.what}), in a comment or "
            f"a key; secrets never belong in config files, not even commented out: remove it "
            f"(and rotate it), and set the environment variable {shape.env} "
            f"(or {shape.alternative()}) instead",
            file=doc.file,
            line=number,
            column=offset + 1,
        )


def load_config(file: Path) -> Config:
    """Read and validate config.yaml. Every error names file, line, column and key."""
    doc = load_positioned(file)
    if not isinstance(doc.data, dict):
        raise ConfigError(
            "the config file must be a mapping of sections", file=file, line=1, column=1
        )
    _refuse_literal_secrets(doc)
    try:
        cfg = Config.model_validate({**doc.data, "source_file": file.resolve()})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(
            p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-")
        )
        pos = doc.where(loc)
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{err['msg']}{more}",
            file=file,
            line=pos.line,
            column=pos.column,
            key=".".join(map(str, loc)) or None,
        ) from None
    for problem in check_routing(cfg.routing, [a.id for a in cfg.billing.accounts]):
        if problem.severity == "error":
            pos = doc.where(problem.where)
            raise ConfigError(
                problem.message,
                file=file,
                line=pos.line,
                column=pos.column,
                key=".".join(map(str, problem.where)),
            )
    cfg._deprecations = tuple(_deprecated_settings(doc))
    return cfg


def _deprecated_settings(doc: PositionedYaml) -> list[str]:
    data = doc.data
    out = []
    sf = data.get("salesforce")
    if isinstance(sf, dict) and "stripe_id_field" in sf:
        pos = doc.where(("salesforce", "stripe_id_field"))
        out.append(
            f"{doc.file}:{pos.line}: salesforce.stripe_id_field is deprecated and will be removed "
            "in the next release; set writeback_field on the billing account instead "
            "(billing.accounts[0].writeback_field)"
        )
    billing = data.get("billing")
    if isinstance(billing, dict) and "target" in billing:
        pos = doc.where(("billing", "target"))
        out.append(
            f"{doc.file}:{pos.line}: billing.target is deprecated and will be removed in the next "
            "release; set kind on each billing account instead (billing.accounts[].kind)"
        )
    return out


# The variables SecretSource reads, named in its repr and handed to the log redactor.
_SECRET_NAMES = (
    "SALESFORCE_PASSWORD",
    "SALESFORCE_SECURITY_TOKEN",
    "SALESFORCE_CONSUMER_SECRET",
    "SALESFORCE_ACCESS_TOKEN",
    "SALESFORCE_PRIVATE_KEY",
    "STRIPE_API_KEY",
)


@dataclass(frozen=True)
class SecretSource:
    """Reads secrets from the environment: `NAME`, or the file named by `NAME_FILE`.

    Every value it hands out is registered with the log redactor first, so that value is
    removed from logs, tracebacks and stored errors whatever its shape. Its repr names the
    secrets that are set, never their values (a SecretSource ends up in tracebacks and
    debuggers).
    """

    environ: dict[str, str] = field(repr=False)

    @classmethod
    def from_os(cls) -> SecretSource:
        return cls(dict(os.environ))

    def __repr__(self) -> str:
        known = self._names()
        names = sorted(n for n in self.environ if n in known or n.removesuffix("_FILE") in known)
        return f"SecretSource(set={', '.join(names) or 'none'})"

    def _names(self) -> set[str]:
        # Billing accounts name their key variable (api_key_env); by convention it ends in _API_KEY.
        given = (k.removesuffix("_FILE") for k in self.environ)
        return {*_SECRET_NAMES, *(k for k in given if k.endswith("_API_KEY"))}

    def get(self, name: str) -> str | None:
        value = self._read(name)
        REDACTOR.add(value)
        return value

    def _read(self, name: str) -> str | None:
        if self.environ.get(name):
            return self.environ[name]
        file = self.environ.get(f"{name}_FILE")
        if file:
            try:
                return Path(file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read secret file named by {name}_FILE: {exc.strerror}"
                ) from None
            except UnicodeDecodeError:
                raise ConfigError(
                    f"the secret file named by {name}_FILE is not UTF-8 text"
                ) from None
        return None

    def require(self, name: str, why: str) -> str:
        value = self.get(name)
        if not value:
            raise ConfigError(
                f"set the environment variable {name} (or {name}_FILE naming a file): {why}"
            )
        return value

    def all_values(self) -> list[str]:
        """Every secret value known, for the log redactor."""
        out = []
        for n in sorted(self._names()):
            try:
                v = self.get(n)
            except ConfigError:
                v = None
            if v and len(v) >= 6:
                out.append(v)
        return out
