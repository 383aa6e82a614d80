"""The error types an admin can act on.

One root, `ConnectorError`, split by what the caller does next:
- `ConfigError` / `MappingError`: fix a file, nothing was contacted (exit 2);
- `TransientError`: retry later, the record goes to the retry list;
- `RecordError`: skip this record and report it, the run goes on;
- `ConflictError`: stop touching this record and ask a human;
- `UnavailableError`: the run cannot proceed at all (auth, unreachable, lock held; exit 3).
Every error carries the facts an admin needs; none ever carries a secret.
"""

from __future__ import annotations

from pathlib import Path


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""

    exit_code = 1


class ConfigError(ConnectorError):
    """A configuration file or environment cannot be used. Nothing was contacted."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = Path(file) if file is not None else None
        self.line = line
        self.column = column
        self.key = key
        super().__init__(self.location_prefix() + message)

    def location_prefix(self) -> str:
        if self.file is None:
            return f"{self.key}: " if self.key else ""
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where + ": " + (f"{self.key}: " if self.key else "")


class MappingError(ConfigError):
    """A mapping file cannot be used. Carries where, so the CLI can print file:line:column."""


class UnavailableError(ConnectorError):
    """The run could not start or continue: authentication, an unreachable service, a lock."""

    exit_code = 3


class AuthenticationError(UnavailableError):
    """Credentials were refused. The message names the variable or file to check."""


class LockHeldError(UnavailableError):
    """Another runner holds the single-runner lock."""


class LockLost(UnavailableError):
    """The single-runner lock was lost mid-run (its connection ended, its file was removed).

    Raised by the runner's `before_write` check before the next write: the run ends
    `interrupted`, what was applied is recorded, the cursor does not move (exit 3)."""


class BudgetExhaustedError(UnavailableError):
    """The Salesforce API budget guard stopped the run before it spent more than allowed."""


class TransientError(ConnectorError):
    """Worth retrying later: rate limits, timeouts, 5xx, dropped connections, row locks."""

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)


class RecordError(ConnectorError):
    """One record cannot be synced; the run goes on and the record is reported."""

    def __init__(self, message: str, *, code: str, account_id: str | None = None) -> None:
        self.code = code
        self.account_id = account_id
        super().__init__(message)


class ConflictError(RecordError):
    """A state the connector must not resolve on its own (e.g. a merge after sync)."""
