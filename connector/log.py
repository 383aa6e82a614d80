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

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

# Shapes of secrets, whatever variable they came from.
_SECRET_SHAPES = re.compile(
    # Stripe secret, restricted and Organization keys (sk_org_...)
    r"(?:[sr]k_(?:live|test|org)_[A-Za-z0-9_]{6,})"
    r"|(?:00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{10,})"  # Salesforce session ids / access tokens
    r"|(?:Bearer\s+[A-Za-z0-9._~+/!=-]{8,})"  # Authorization headers
    r"|(?:Basic\s+[A-Za-z0-9+/=]{8,})"
    r"|(?:-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----)"
)
# Field names whose value is never logged.
_SECRET_FIELDS = re.compile(
    r"(password|secret|token|api_key|apikey|session_id|authorization|private_key|assertion)", re.I
)


class Redactor:
    """Removes known secret values and anything shaped like a secret from an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def add(self, *secrets: str) -> None:
        self._values = sorted(
            {*self._values, *(s for s in secrets if s and len(s) >= 6)}, key=len, reverse=True
        )

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
