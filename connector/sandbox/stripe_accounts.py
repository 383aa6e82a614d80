"""Who may reach which account of the Stripe sandbox: accounts, keys, organizations, sharing groups.

The directory answers one question per request: given the API key and the `Stripe-Context`
or `Stripe-Account` header, which account does the request act on, and whose rate limit does
it use? It holds no customers. Three kinds of credential, as Stripe has them:

- an account's own secret or restricted key (`sk_test_`, `rk_test_`, `sk_live_`, `rk_live_`)
  acts on that account; with `Stripe-Account` (or `Stripe-Context`) naming one of its
  connected accounts, a Connect platform's key acts on that account;
- an organization key (`sk_org_...`; Stripe has no `rk_org_`) belongs to no account: every
  request must name the account in `Stripe-Context` (`acct_...`, or `acct_platform/acct_child`
  for a connected account of an organization's platform) and must pin `Stripe-Version`
  (docs.stripe.com/keys/organization-api-keys). `Stripe-Account` does not stand in for it.

Sharing groups are Stripe Organizations' customer sharing: "An account can belong to only one
sharing group", and every customer of every account in a group is shared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.sandbox.stripe_limits import RateLimits

#: the account of the single-account sandbox: any test-mode key reaches it unless keys are fixed
DEFAULT_ACCOUNT = "acct_1SandboxDefault0"
ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]{1,64}")
ORG_KEY_PREFIX = "sk_org_"
ACCOUNT_KEY_PREFIXES = ("sk_test_", "rk_test_", "sk_live_", "rk_live_")


@dataclass
class Account:
    id: str
    livemode: bool = False
    keys: set[str] = field(default_factory=set)
    #: Connect: accounts this account's keys may act on with Stripe-Account / Stripe-Context
    connected: set[str] = field(default_factory=set)
    #: raised or lowered limits (None: the sandbox's)
    rate_limits: Mapping[str, Any] | None = None


@dataclass
class Organization:
    id: str
    accounts: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    livemode: bool = False
    rate_limits: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Access:
    """A request's resolved target and whose limiter it counts against."""

    account: Account
    limiter_owner: str
    livemode: bool
    limits_override: Mapping[str, Any] | None
    organization_key: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a credential may not act (the Stripe server turns it into Stripe's error shape)."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None


def mask_key(key: str) -> str:
    """Stripe shows a key as its prefix, stars and its last four characters."""
    prefix = "_".join(key.split("_")[:2]) + "_" if key.count("_") >= 2 else ""
    hidden = len(key) - len(prefix)
    return prefix + ("*" * (hidden - 4) + key[-4:] if hidden > 8 else "*" * max(hidden, 4))


def _no_access(key: str, account: str) -> Refusal:
    # Stripe's answer when a key names an account it cannot reach (403, `account_invalid`).
    return Refusal(
        403,
        f"The provided key '{mask_key(key)}' does not have access to account '{account}' (or that account "
        "does not exist). Application access may have been revoked.",
        code="account_invalid",
    )


# Stripe's wording as seen in public reports of its answer when a request does not say which
# account it acts on and the key has none of its own. Which status Stripe sends for an
# organization key without Stripe-Context could not be confirmed; 403 is Stripe's status for
# "the API key doesn't have permissions to perform the request".
MISSING_CONTEXT_MESSAGE = (
    "Permission denied. API Key does not have permission to access account. To make an authorized request, "
    "make sure that the API Key making the request has the correct permissions for the resource in the API "
    "call. In some cases, you may also need to supply an Account ID in the Stripe-Context header."
)
# The documentation says organization-key requests "must include the Stripe-Version header";
# Stripe's exact error text for a request without it could not be found: this is the
# sandbox's wording, in Stripe's shape (400, invalid_request_error, param-less).
MISSING_VERSION_MESSAGE = (
    "Requests made with an organization API key must include the Stripe-Version header to pin an API "
    "version. See https://docs.stripe.com/keys/organization-api-keys."
)


class Directory:
    """Accounts, organizations and sharing groups of one Stripe sandbox."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {DEFAULT_ACCOUNT: Account(DEFAULT_ACCOUNT)}
        self.organizations: dict[str, Organization] = {}
        self._group_of: dict[str, int] = {}  # account id -> group number
        self._groups: list[frozenset[str]] = []
        self._key_owner: dict[str, str] = {}  # account key -> account id
        self._org_of_key: dict[str, str] = {}  # organization key -> organization id
        #: exactly these keys reach the default account (None: any test-mode key not registered)
        self.default_keys: frozenset[str] | None = None

    # --- configuration ---------------------------------------------------------------------

    def add_account(
        self,
        id: str,
        *,
        keys: Iterable[str] = (),
        livemode: bool = False,
        connected: Iterable[str] = (),
        rate_limits: Mapping[str, Any] | None = None,
    ) -> Account:
        _check_account_id(id, "id")
        if id in self.accounts and id != DEFAULT_ACCOUNT:
            raise ValueError(f"account {id} already exists")
        if rate_limits:
            RateLimits().overridden(rate_limits)  # refuse a bad spec now, not at the first request
        account = self.accounts.get(id) or Account(id)
        account.livemode = bool(livemode)
        account.rate_limits = dict(rate_limits) if rate_limits else None
        for key in keys:
            self._claim_key(key, id, organization=False)
            account.keys.add(key)
        for child in connected:
            _check_account_id(child, f"{id}.connected")
            if child not in self.accounts:
                self.accounts[child] = Account(child, livemode=account.livemode)
            account.connected.add(child)
        self.accounts[id] = account
        return account

    def add_organization(
        self,
        id: str,
        *,
        accounts: Iterable[str],
        keys: Iterable[str] = (),
        livemode: bool = False,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> Organization:
        if not re.fullmatch(r"org_[A-Za-z0-9]{1,64}", id):
            raise ValueError(
                f"organization id {id!r}: expected org_ followed by letters and digits"
            )
        if id in self.organizations:
            raise ValueError(f"organization {id} already exists")
        members = set(accounts)
        for member in members:
            if member not in self.accounts:
                raise ValueError(
                    f"organization {id}: unknown account {member} (add it under accounts first)"
                )
        if rate_limits:
            RateLimits().overridden(rate_limits)
        org = Organization(
            id, members, set(), bool(livemode), dict(rate_limits) if rate_limits else None
        )
        for key in keys:
            self._claim_key(key, id, organization=True)
            org.keys.add(key)
        self.organizations[id] = org
        return org

    def add_sharing_group(self, accounts: Iterable[str]) -> frozenset[str]:
        members = frozenset(accounts)
        if len(members) < 2:
            raise ValueError("a sharing group needs at least two accounts")
        for member in sorted(members):
            if member not in self.accounts:
                raise ValueError(f"sharing group: unknown account {member}")
            if member in self._group_of:
                # Stripe: "An account can belong to only one sharing group."
                raise ValueError(
                    f"sharing group: account {member} already belongs to a sharing group"
                )
        self._groups.append(members)
        for member in members:
            self._group_of[member] = len(self._groups) - 1
        return members

    def _claim_key(self, key: str, owner: str, *, organization: bool) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{owner}: a key must be a non-empty string")
        if organization and not key.startswith(ORG_KEY_PREFIX):
            raise ValueError(
                f"{owner}: key {mask_key(key)}: an organization key starts with {ORG_KEY_PREFIX}"
            )
        if not organization and not key.startswith(ACCOUNT_KEY_PREFIXES):
            raise ValueError(
                f"{owner}: key {mask_key(key)}: an account key starts with one of {', '.join(ACCOUNT_KEY_PREFIXES)}"
            )
        if key in self._key_owner or key in self._org_of_key:
            raise ValueError(
                f"{owner}: key {mask_key(key)} already belongs to another account or organization"
            )
        (self._org_of_key if organization else self._key_owner)[key] = owner

    # --- questions -------------------------------------------------------------------------

    def group_of(self, account: str) -> frozenset[str] | None:
        number = self._group_of.get(account)
        return self._groups[number] if number is not None else None

    def shares_with(self, a: str, b: str) -> bool:
        """Whether customers of account `a` are customers of account `b` too."""
        if a == b:
            return True
        number = self._group_of.get(a)
        return number is not None and self._group_of.get(b) == number

    def describe(self) -> dict[str, Any]:
        """The directory without its keys (what `GET /_sandbox/accounts` shows)."""
        return {
            "accounts": [
                {
                    "id": a.id,
                    "livemode": a.livemode,
                    "keys": len(a.keys),
                    "connected": sorted(a.connected),
                    "sharing_group": sorted(self.group_of(a.id) or ()),
                }
                for a in self.accounts.values()
            ],
            "organizations": [
                {"id": o.id, "accounts": sorted(o.accounts), "keys": len(o.keys)}
                for o in self.organizations.values()
            ],
            "sharing_groups": [sorted(g) for g in self._groups],
        }

    def resolve(
        self, key: str, *, context: str | None, on_behalf_of: str | None, version: str | None
    ) -> Access | Refusal:
        """The account a request acts on. `context` is Stripe-Context, `on_behalf_of` Stripe-Account."""
        org_id = self._org_of_key.get(key)
        if org_id is not None:
            org = self.organizations[org_id]
            if not context:
                return Refusal(403, MISSING_CONTEXT_MESSAGE)
            if not version:
                return Refusal(400, MISSING_VERSION_MESSAGE)
            target = self._walk(org.accounts, context)
            if target is None:
                return _no_access(key, context)
            return Access(target, org.id, org.livemode, org.rate_limits, organization_key=True)
        if key.startswith(ORG_KEY_PREFIX):
            return Refusal(401, f"Invalid API Key provided: {mask_key(key)}")
        owner_id = self._key_owner.get(key)
        if owner_id is None:
            if self.default_keys is not None:
                ok = key in self.default_keys
            else:
                ok = key.startswith(("sk_test_", "rk_test_"))
            if not ok:
                return Refusal(401, f"Invalid API Key provided: {mask_key(key)}")
            owner_id = DEFAULT_ACCOUNT
        owner = self.accounts[owner_id]
        named = context or on_behalf_of  # Stripe-Context supersedes Stripe-Account
        if not named or named == owner.id:
            return Access(
                owner, owner.id, owner.livemode, owner.rate_limits, organization_key=False
            )
        target = self._walk({owner.id} | owner.connected, named)
        if target is None:
            return _no_access(key, named)
        # A platform's requests for its connected accounts are paced with the platform's key.
        return Access(target, owner.id, owner.livemode, owner.rate_limits, organization_key=False)

    def _walk(self, reachable: set[str], path: str) -> Account | None:
        """Follow `acct_a/acct_b`: each step after the first is the previous one's connected account."""
        current: Account | None = None
        for step in path.split("/"):
            allowed = reachable if current is None else current.connected
            if step not in allowed:
                return None
            current = self.accounts.get(step)
            if current is None:
                return None
        return current


def _check_account_id(value: Any, where: str) -> None:
    if not isinstance(value, str) or not ACCOUNT_ID.fullmatch(value):
        raise ValueError(
            f"{where}: {value!r} is not a Stripe account id (acct_ followed by letters and digits)"
        )
