"""Pydantic models of config.yaml, and the secrets that come only from the environment.

What this module must never do: read a secret from YAML. A config file that holds something
that looks like a key, token or password is refused with the variable to use instead. Secrets
are read from an environment variable `NAME` or from the file named by `NAME_FILE`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connector.errors import ConfigError
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
    org_id: str | None = Field(default=None, pattern=r"^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$")
    # Account field that receives the billing customer id after a create or adoption.
    stripe_id_field: str = "Stripe_Customer_Id__c"
    # Extra SOQL condition ANDed to StatusCode = 'Activated', e.g. "Type = 'New Business'".
    order_filter: str | None = None
    # Records per query page (Salesforce's Sforce-Query-Options batchSize, 200-2000).
    page_size: int = Field(default=2000, ge=200, le=2000)
    # Records whose SystemModstamp is this close to the cursor are re-read and de-duplicated.
    overlap_seconds: int = Field(default=300, ge=0, le=86400)
    # Stop a run cleanly before it uses more than this share of the org's remaining daily calls.
    api_budget_share: float = Field(default=0.5, gt=0, le=1)
    writeback_batch_size: int = Field(default=200, ge=1, le=200)

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


class BillingAccountConfig(_Model):
    """One billing account (a Stripe account). Links are keyed by `id`."""

    id: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # Name of the environment variable holding the Stripe secret or restricted key.
    api_key_env: str = "STRIPE_API_KEY"
    # Only for the sandbox or a proxy: http://127.0.0.1:PORT.
    api_base: str | None = None
    # Stripe Connect / Organizations: act on behalf of this account (acct_...).
    stripe_account: str | None = None
    # Stripe writes per second for this account (test mode allows about 25, live about 100).
    max_requests_per_second: float = Field(default=20, gt=0, le=1000)
    max_network_retries: int = Field(default=2, ge=0, le=10)

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


class BillingConfig(_Model):
    target: Literal["stripe"] = "stripe"
    accounts: tuple[BillingAccountConfig, ...] = (BillingAccountConfig(),)

    @field_validator("accounts")
    @classmethod
    def _unique(cls, v: tuple[BillingAccountConfig, ...]) -> tuple[BillingAccountConfig, ...]:
        if not v:
            raise ValueError("at least one billing account is needed")
        ids = [a.id for a in v]
        if len(set(ids)) != len(ids):
            raise ValueError("billing account ids must be unique")
        return v


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
    state: StateConfig = StateConfig()
    mappings_dir: Path = Path("mappings")
    log: LogConfig = LogConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    health: HealthConfig = HealthConfig()
    alerts: AlertsConfig = AlertsConfig()
    # Where the file was read from; relative paths (state, mappings) resolve against its folder.
    source_file: Path | None = Field(default=None, exclude=True)

    def resolve_path(self, p: Path) -> Path:
        if p.is_absolute() or self.source_file is None:
            return p
        return (self.source_file.parent / p).resolve()

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

# Patterns of things that must never sit in a config file. Checked on every string value.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[sr]k_(live|test)_[A-Za-z0-9]{8,}"), "STRIPE_API_KEY"),
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{20,}"), "SALESFORCE_ACCESS_TOKEN"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "SALESFORCE_PRIVATE_KEY_FILE"),
    # A database URL with a password in it (postgresql+psycopg://user:secret@host/db).
    (re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"), "PGPASSWORD"),
    # A Slack incoming-webhook URL is its own token.
    (re.compile(r"hooks\.slack\.com/(services|workflows)/"), "BILLING_CONNECTOR_ALERT_WEBHOOK_URL"),
)
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
            for pattern, var in _SECRET_PATTERNS:
                if pattern.search(node):
                    pos = doc.where(path)
                    alt = (
                        "a .pgpass file named by PGPASSFILE"
                        if var == "PGPASSWORD"
                        else f"{var}_FILE"
                    )
                    raise ConfigError(
                        f"this value looks like a secret; secrets are never read from config files, "
                        f"set the environment variable {var} (or {alt}) instead",
                        file=doc.file,
                        line=pos.line,
                        column=pos.column,
                        key=".".join(map(str, path)),
                    )

    visit(doc.data, ())


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
    return cfg


@dataclass(frozen=True)
class SecretSource:
    """Reads secrets from the environment: `NAME`, or the file named by `NAME_FILE`."""

    environ: dict[str, str]

    @classmethod
    def from_os(cls) -> SecretSource:
        return cls(dict(os.environ))

    def get(self, name: str) -> str | None:
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
        names = [
            "SALESFORCE_PASSWORD",
            "SALESFORCE_SECURITY_TOKEN",
            "SALESFORCE_CONSUMER_SECRET",
            "SALESFORCE_ACCESS_TOKEN",
            "STRIPE_API_KEY",
        ]
        names += [k for k in self.environ if k.endswith("_API_KEY")]
        out = []
        for n in names:
            try:
                v = self.get(n)
            except ConfigError:
                v = None
            if v and len(v) >= 6:
                out.append(v)
        return out
