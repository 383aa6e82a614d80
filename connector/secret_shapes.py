"""What a secret looks like, for refusing one in a config or mapping file.

Config and mapping files are committed, shared and pasted into tickets; a key in one (even in a
comment) is a leaked key. This module holds the shapes of the connector's own secrets
(Salesforce sessions, private keys, database passwords) and gathers those each billing system
registers (`connector.billing.TARGET_KINDS[...].secret_shapes`), so no vendor's key format is
written here. It never logs or returns the secret itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SecretShape:
    """One kind of secret: its shape, what to call it, and the variable it belongs in."""

    pattern: re.Pattern[str]
    what: str  # "a Salesforce access token"
    env: str  # "SALESFORCE_ACCESS_TOKEN"
    instead: str = ""  # where else it may live; default "<env>_FILE naming a file"

    def alternative(self) -> str:
        return self.instead or f"{self.env}_FILE"


_OWN_SHAPES: tuple[SecretShape, ...] = (
    SecretShape(
        re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{20,}"),
        "a Salesforce session id or access token",
        "SALESFORCE_ACCESS_TOKEN",
    ),
    SecretShape(
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        "a private key",
        "SALESFORCE_PRIVATE_KEY_FILE",
    ),
    # A database URL with a password in it (postgresql+psycopg://user:secret@host/db).
    SecretShape(
        re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
        "a URL with a password in it",
        "PGPASSWORD",
        "a .pgpass file named by PGPASSFILE",
    ),
    # An incoming-webhook URL is its own credential (the daemon's alerts).
    SecretShape(
        re.compile(r"hooks\.slack\.com/(services|workflows)/"),
        "a Slack webhook URL",
        "BILLING_CONNECTOR_ALERT_WEBHOOK_URL",
    ),
)


def shapes() -> tuple[SecretShape, ...]:
    """The connector's own shapes and every registered billing system's."""
    # Imported here: the registry imports the adapters, which import config, which uses this.
    from connector.billing import TARGET_KINDS

    billing = tuple(s for kind in TARGET_KINDS.values() for s in kind.secret_shapes)
    return (*billing, *_OWN_SHAPES)


def find_secret(text: str) -> tuple[SecretShape, int] | None:
    """The first secret-shaped thing in `text` and its 0-based offset, or None."""
    found: tuple[SecretShape, int] | None = None
    for shape in shapes():
        match = shape.pattern.search(text)
        if match and (found is None or match.start() < found[1]):
            found = (shape, match.start())
    return found


def secret_shape(text: str) -> str | None:
    """What the secret in `text` looks like ("a private key"), or None."""
    found = find_secret(text)
    return found[0].what if found else None
