"""Salesforce record ids: the one check and the one canonical form used wherever an id enters.

Salesforce shows the 15-character, case-sensitive form in its URLs and reports, and the API
answers with the 18-character form: the same 15 characters plus a case-safe checksum suffix
(one character per five, a bit per upper-case letter). Links, conflicts and retries are keyed by
the id as text, so an id that arrives in both forms would be two accounts to the store: every id
that enters (CLI arguments, config values, Salesforce answers) goes through `normalize_sf_id`.
Pure: no I/O, no imports from the rest of the connector.
"""

from __future__ import annotations

import re

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"[A-Za-z0-9]{15}")
_ID18 = re.compile(r"[A-Za-z0-9]{15}[A-Za-z0-5]{3}")

# Key prefixes (the first three characters) of the objects the connector names.
ACCOUNT_PREFIX = "001"
ORDER_PREFIX = "801"
ORGANIZATION_PREFIX = "00D"


class SalesforceIdError(ValueError):
    """A value that cannot be a Salesforce record id (of the expected object)."""


def checksum_suffix(id15: str) -> str:
    """The three characters Salesforce appends to a 15-character id to make it case-safe."""
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, c in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= c <= "Z":
                bits |= 1 << i
        suffix += _SUFFIX_ALPHABET[bits]
    return suffix


def normalize_sf_id(value: str, *, prefix: str | None = None, what: str = "Salesforce id") -> str:
    """The 18-character form of a 15- or 18-character id; raises SalesforceIdError otherwise.

    An 18-character id is kept as given (the suffix upper-cased: Salesforce treats it
    case-insensitively): Salesforce itself produced it, and rewriting its suffix would make the
    same record two keys in a store written before this check existed. `prefix` is the object's
    key prefix (001 for Account), so an Order id given where an Account id belongs is refused.
    """
    if not isinstance(value, str):
        raise SalesforceIdError(f"{what} must be text, not {type(value).__name__}")
    shown = value if len(value) <= 40 else value[:40] + "..."
    if _ID15.fullmatch(value):
        result = value + checksum_suffix(value)
    elif _ID18.fullmatch(value):
        result = value[:15] + value[15:].upper()
    else:
        raise SalesforceIdError(
            f"{what} {shown!r} is not a Salesforce id (15 or 18 letters and digits, "
            "as in the record's URL)"
        )
    if prefix is not None and not result.startswith(prefix):
        raise SalesforceIdError(
            f"{what} {shown!r} is not the right kind of record: its id must start with {prefix}"
        )
    return result
