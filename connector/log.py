"""structlog set-up: one readable list of processors, and the redaction of secrets.

Events are short dotted names with fields (`sync.record.created`). The redactor runs last
before rendering, on every field and inside formatted tracebacks, so no key, token, session id
or password reaches a log line, whatever code logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

# Shapes of secrets, whatever variable they came from. `%21` is `!` URL-encoded: a token
# quoted into a query string or a form body keeps its shape that way.
_SECRET_SHAPES = re.compile(
    # Stripe secret, restricted and Organization keys (sk_org_...), and webhook secrets
    r"(?:[sr]k_(?:live|test|org)_[A-Za-z0-9_]{6,})"
    r"|(?:whsec_[A-Za-z0-9]{8,})"
    # Salesforce session ids / access tokens: org id, "!", then an opaque part that may hold
    # "-", "_" and "." (and "%xx" once URL-encoded)
    r"|(?:00D[A-Za-z0-9]{12,15}(?:!|%21)(?:[A-Za-z0-9._\-]|%[0-9A-Fa-f]{2}){10,})"
    # JWTs (the JWT bearer flow's assertion, OAuth id tokens): header.payload.signature,
    # base64url, the header always starting with '{"' = eyJ
    r"|(?:eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*)"
    r"|(?:Bearer\s+[A-Za-z0-9._~+/!=%\-]{8,})"  # Authorization headers
    r"|(?:Basic\s+[A-Za-z0-9+/=]{8,})"
    r"|(?:-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----)"
)
# Field names whose value is never logged.
_SECRET_FIELDS = re.compile(
    r"(password|secret|token|api_key|apikey|session_id|authorization|private_key|assertion)", re.I
)


class Redactor:
    """Removes known secret values and anything shaped like a secret from an event.

    Known values are the exact secrets this process loaded (SecretSource registers each one it
    reads) or received (a login's session id): they are removed as given and in their
    URL-encoded forms, wherever they appear, whatever their shape.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        found = set(self._values)
        for secret in secrets:
            # Very short values would redact ordinary words; no real key or token is that short.
            if not secret or len(secret) < 6:
                continue
            found |= {secret, secret.strip(), quote(secret, safe=""), quote_plus(secret)}
            # A secret file's value may be a PEM or carry a newline; its lines are secrets too.
            found |= {ln.strip() for ln in secret.splitlines() if len(ln.strip()) >= 16}
        # Longest first, so a value that contains another is removed whole.
        self._values = sorted((v for v in found if len(v) >= 6), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return _SECRET_SHAPES.sub(REDACTED, text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {
                k: (REDACTED if _SECRET_FIELDS.search(str(k)) and v else self._clean(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key in list(event):
            if _SECRET_FIELDS.search(key) and event[key]:
                event[key] = REDACTED
            else:
                event[key] = self._clean(event[key])
        return event


REDACTOR = Redactor()


def configure(
    *,
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Configure structlog for the process. JSON by default, console output on a terminal."""
    out: Any = stream or _StderrNow()
    REDACTOR.add(*secrets)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,  # binds run_id to every line of a run
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # tracebacks become text first ...
        REDACTOR,  # ... so secrets inside them are removed too
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


class _StderrNow:
    """Writes to whatever sys.stderr is at the time of the write, so that a progress bar that
    redirects stderr (rich) prints log lines above itself instead of through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
