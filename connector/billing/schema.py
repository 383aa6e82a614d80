"""What a billing object accepts, as `mappings check` and mapping evaluation need to know it.

Each adapter describes its objects with these types and registers them (see
`connector.billing.TARGET_KINDS`); the mapping compiler reads them and applies no vendor rule of
its own. Everything here is data: formats name how a value is made acceptable (an email that
would be refused is left unset, a phone number is never cut), `together` names fields the
system accepts only as a group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["string", "enum", "string_list"]
# How a text value is made acceptable: free text is cut to its limit; an email, phone number or
# country the system would refuse (or that a cut would make wrong) is left unset instead.
Format = Literal["text", "email", "phone", "country"]


@dataclass(frozen=True, slots=True)
class TargetField:
    """One settable leaf of a billing object."""

    path: str
    kind: Kind
    max_length: int | None = None
    enum: tuple[str, ...] = ()
    format: Format = "text"


@dataclass(frozen=True, slots=True)
class Together:
    """Fields the system accepts only as a group under one object (Stripe's shipping needs a
    name and an address). A mapping that maps one group must map the others; a record that
    leaves a group empty unsets the whole object."""

    object: str  # "shipping"
    groups: tuple[str, ...]  # a leaf ("shipping.name") or an object ("shipping.address")
    # group -> the message when that group is mapped and another is not
    missing: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CustomFields:
    """Top-level fields each site defines for itself (Chargebee's `cf_*`): any path that starts
    with `prefix` and fully matches `pattern` is a text field of at most `max_length` characters.
    The system's description does not list them, so a mapping may name one the site has not
    created yet; `where` tells the admin where to create it."""

    prefix: str  # "cf_"
    pattern: str  # a regular expression the whole path must match
    max_name: int  # longest path accepted
    max_length: int  # longest value sent; longer text is cut like any text field
    rule: str  # the naming rule in words, for messages
    where: str  # where an admin creates such a field


@dataclass(frozen=True, slots=True)
class TargetSchema:
    """What one object of one billing system accepts from a mapping."""

    system: str  # "stripe"
    object: str  # "customer"
    label: str  # how messages name the system: "Stripe"
    leaves: Mapping[str, TargetField]
    objects: frozenset[str]  # paths that are objects (address, shipping, shipping.address)
    refused: Mapping[str, str]  # path -> why it cannot be mapped
    together: tuple[Together, ...] = ()
    # Characters a tag key may not hold (beyond '.', which separates paths in a mapping).
    tag_key_forbidden: str = ""
    # Fields a site defines for itself, when the system has them (None: it has none).
    custom: CustomFields | None = None

    def custom_field(self, path: str) -> TargetField | str | None:
        """The field a custom-field path names, a reason it cannot be one, or None when the
        path is not a custom field's (the system has none, or another prefix)."""
        c = self.custom
        if c is None or not path.startswith(c.prefix):
            return None
        if len(path) > c.max_name or not re.fullmatch(c.pattern, path):
            return f"{self.label} custom field names are {c.rule}"
        return TargetField(path, "string", c.max_length)
