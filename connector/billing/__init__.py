"""Billing targets behind one port (`base.BillingTarget`), and the registry of their kinds.

`TARGET_KINDS` maps `billing.accounts[].kind` to what that kind of billing system supplies: a
factory for the target, its rules, and the schema of each object a mapping can build (keyed by
(system, object) for `mappings check`). A new target is one new module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from connector.billing import chargebee as _chargebee
from connector.billing import chargebee_schema as _chargebee_schema
from connector.billing import stripe as _stripe
from connector.billing import stripe_fields as _stripe_fields
from connector.billing.base import BillingTarget, TargetRules
from connector.billing.schema import TargetSchema
from connector.secret_shapes import SecretShape

if TYPE_CHECKING:
    from connector.config import BillingAccountConfig, SecretSource


@dataclass(frozen=True, slots=True)
class TargetKind:
    """One kind of billing system as config and mappings name it."""

    kind: str  # billing.accounts[].kind
    system: str  # the mapping files' `system:` (a kind's objects; several kinds may share one)
    rules: TargetRules
    factory: Callable[[BillingAccountConfig, SecretSource], BillingTarget]
    schemas: Mapping[str, Callable[[], TargetSchema]] = field(default_factory=dict)
    # Shapes of this system's credentials, refused in config and mapping files.
    secret_shapes: tuple[SecretShape, ...] = ()
    # Customer fields (top-level payload keys) the accounts of a sharing group share, for an
    # account as configured (Stripe: depends on its pinned API version); None: no sharing.
    shared_fields: Callable[[BillingAccountConfig], frozenset[str]] | None = None


def _chargebee_shared_fields(account: BillingAccountConfig) -> frozenset[str]:
    """With Customer Sharing the entities use one customer: every field it has is shared."""
    if getattr(account, "sharing", None) != "customer_sharing":
        return frozenset()
    schema = _chargebee_schema.customer_schema()
    return frozenset(path.split(".")[0] for path in (*schema.leaves, *schema.objects))


TARGET_KINDS: Mapping[str, TargetKind] = {
    "stripe": TargetKind(
        kind="stripe",
        system="stripe",
        rules=_stripe.RULES,
        factory=_stripe.StripeTarget,
        schemas={"customer": _stripe_fields.customer_schema},
        secret_shapes=(_stripe.KEY_SHAPE,),
        shared_fields=_stripe.account_shared_fields,
    ),
    "chargebee": TargetKind(
        kind="chargebee",
        system="chargebee",
        rules=_chargebee.RULES,
        factory=_chargebee.ChargebeeTarget.from_config,
        schemas={"customer": _chargebee_schema.customer_schema},
        secret_shapes=(_chargebee.KEY_SHAPE,),
        shared_fields=_chargebee_shared_fields,
    ),
}

# The system a mapping file builds for when it names none (every file before `system:` existed).
DEFAULT_SYSTEM = "stripe"


def systems() -> dict[str, TargetKind]:
    """system -> the first kind registered for it (its rules and schemas)."""
    out: dict[str, TargetKind] = {}
    for kind in TARGET_KINDS.values():
        out.setdefault(kind.system, kind)
    return out


def rules_for(system: str) -> TargetRules | None:
    kind = systems().get(system)
    return kind.rules if kind else None


def mapping_schema(system: str, obj: str) -> TargetSchema | None:
    """The schema a mapping for `obj` ("customer") of `system` is checked against, or None."""
    kind = systems().get(system)
    build = kind.schemas.get(obj) if kind else None
    return build() if build else None


def build_target(account: BillingAccountConfig, secrets: SecretSource) -> BillingTarget:
    return TARGET_KINDS[account.kind].factory(account, secrets)
