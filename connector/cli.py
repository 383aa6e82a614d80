"""The `billing-connector` command: parse, load config, call the engine, print.

Exit codes (the same for every command):
  0  every record done
  1  the run finished but some records failed or were refused
  2  configuration or mapping invalid (nothing was contacted)
  3  could not run: authentication, a service unreachable, another runner holds the lock
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector import __version__, signals
from connector import log as logsetup
from connector.config import Config, SecretSource, load_config
from connector.errors import ConfigError, ConnectorError
from connector.log import REDACTOR
from connector.mapping import diff_payloads, flatten

if TYPE_CHECKING:
    from connector.engine import Mode

app = typer.Typer(
    name="billing-connector",
    help="Keep billing customers (Stripe, Chargebee) in step with activated Salesforce orders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
mappings_app = typer.Typer(help="Check and preview the YAML field mappings.", no_args_is_help=True)
db_app = typer.Typer(help="The local state store.", no_args_is_help=True)
conflicts_app = typer.Typer(
    help="Merges and other states the connector refuses to resolve alone.", no_args_is_help=True
)
xref_app = typer.Typer(
    help="Cross-references between Salesforce accounts and billing customers.", no_args_is_help=True
)
app.add_typer(mappings_app, name="mappings")
app.add_typer(db_app, name="db")
app.add_typer(conflicts_app, name="conflicts")
app.add_typer(xref_app, name="xref")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="BILLING_CONNECTOR_CONFIG", help="Path to config.yaml."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
AccountOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--account",
        help="Run only this billing account (repeatable); its cursor is its own.",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan; change nothing anywhere.")
]


# Set once a sync or backfill has started its run, so that an internal error says a run was
# recorded as failed only when there was one.
_RUN_STARTED = threading.Event()


def main() -> None:
    signals.install()  # normally done already by connector.__main__, before the imports
    command = typer.main.get_command(app)
    _accept_global_options_after_commands(command)
    try:
        command(prog_name="billing-connector")
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        # A bug: say so plainly, and keep secrets out of the traceback the user will paste.
        import traceback

        text = REDACTOR.scrub("".join(traceback.format_exception(exc)))
        err.print(text, highlight=False, markup=False, soft_wrap=True)
        recorded = " (the run in progress was recorded as failed)" if _RUN_STARTED.is_set() else ""
        err.print(
            f"internal error: this is a bug in billing-connector{recorded}",
            highlight=False,
        )
        raise SystemExit(1) from None
    finally:
        # Flushed here rather than at interpreter exit: a signal that lands while stdout is
        # blocked (a full pipe) then exits with the documented code, not 120.
        with suppress(OSError, ValueError):
            sys.stdout.flush()


# --- global options: before the command (`billing-connector -c prod.yaml sync`) or after it ----


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    auto = "auto"
    json = "json"
    console = "console"


LogLevelOpt = Annotated[
    LogLevel | None,
    typer.Option("--log-level", help="Overrides log.level of the config file.", show_default=False),
]
LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format", help="Overrides log.format of the config file.", show_default=False
    ),
]


@dataclass
class _GlobalOptions:
    """What the command line said about config and logging, wherever the options stood."""

    config: Path | None = None
    log_level: str | None = None
    log_format: str | None = None


_given = _GlobalOptions()


def _show_version(value: bool) -> None:
    if value:
        print(f"billing-connector {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Path to config.yaml, for every command (default: $BILLING_CONNECTOR_CONFIG, "
            "else ./config.yaml). Also accepted after the command, where it wins.",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    global _given
    _given = _GlobalOptions(
        config=config,
        log_level=log_level.value if log_level else None,
        log_format=log_format.value if log_format else None,
    )


def _remember_log_option(ctx: Any, param: Any, value: Any) -> Any:
    if value is not None:
        setattr(_given, param.name, value.value if isinstance(value, Enum) else str(value))
    return value


def _config_after_command(ctx: Any, param: Any, value: Any) -> Any:
    # After the command, -c wins; else -c before the command beats the environment and default.
    source = ctx.get_parameter_source(param.name)
    if _given.config is not None and getattr(source, "name", "") != "COMMANDLINE":
        return _given.config
    return value


_log_options_app = typer.Typer(add_completion=False)


@_log_options_app.command()
def _log_options(log_level: LogLevelOpt = None, log_format: LogFormatOpt = None) -> None:
    """A template only: typer builds the --log-level/--log-format parameters every command gets."""


def _log_option_params() -> list[Any]:
    params = [
        p
        for p in typer.main.get_command(_log_options_app).params
        if p.name in ("log_level", "log_format")
    ]
    for p in params:
        p.expose_value = False  # the command functions never see them; `_given` holds them
        p.callback = _remember_log_option
    return params


def _accept_global_options_after_commands(command: Any) -> None:
    """Give every command --log-level and --log-format, and let its --config defer to a -c
    given before the command (see `_config_after_command`)."""
    subcommands = getattr(command, "commands", None)
    if subcommands is not None:
        for sub in subcommands.values():
            _accept_global_options_after_commands(sub)
        return
    names = {p.name for p in command.params}
    for param in command.params:
        if param.name == "config" and param.callback is None:
            param.callback = _config_after_command
    command.params.extend(p for p in _log_option_params() if p.name not in names)


# --- shared plumbing ---------------------------------------------------------------------------


def _fail(exc: ConnectorError, *, as_json: bool = False) -> None:
    # Error texts can quote what a service answered; they pass the same redaction as logs.
    message = REDACTOR.scrub(str(exc))
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if as_json:
        _print_json_error(message, exc.exit_code, status="failed", **_where(exc))
    raise typer.Exit(exc.exit_code)


def _where(exc: ConnectorError) -> dict[str, Any]:
    """The place of a configuration error, for the JSON object."""
    if not isinstance(exc, ConfigError):
        return {}
    return {
        "file": str(exc.file) if exc.file else None,
        "line": exc.line,
        "column": exc.column,
        "key": exc.key,
    }


def _print_json_error(message: str, exit_code: int, *, status: str, **extra: Any) -> None:
    """The one JSON object of a command that could not run (or was stopped before its run)."""
    print(json.dumps({"status": status, "error": message, "exit_code": exit_code, **extra}))


@contextmanager
def _errors(*, as_json: bool = False) -> Iterator[None]:
    try:
        yield
    except ConnectorError as exc:
        _fail(exc, as_json=as_json)


@contextmanager
def _json_on_error(mode: str, *, enabled: bool) -> Iterator[None]:
    """Under --json, a run that stops with an error, or cannot start (exit 2 or 3), still prints
    one JSON object (status, error, exit code; where, for a config error) before the error goes
    to stderr, so scripts always get an object."""
    try:
        yield
    except ConnectorError as exc:
        if enabled:
            _print_json_error(
                REDACTOR.scrub(str(exc)), exc.exit_code, status="failed", mode=mode, **_where(exc)
            )
        raise


def _load(config_file: Path) -> tuple[Config, SecretSource]:
    secrets = SecretSource.from_os()
    cfg = load_config(config_file)
    logsetup.configure(
        level=_given.log_level or cfg.log.level,
        fmt=_given.log_format or cfg.log.format,
        secrets=secrets.all_values(),
    )
    for note in cfg.deprecations:  # on stderr, so `--json` output stays one object
        err.print(f"warning: {escape(note)}", highlight=False, soft_wrap=True)
    return cfg, secrets


def _parse_date(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        if "T" in value:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        d = date.fromisoformat(value)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    except ValueError:
        raise ConfigError(
            f"{name} must be a date like 2026-01-31 or 2026-01-31T00:00:00Z, not {value!r}"
        ) from None


def _progress(enabled: bool) -> tuple[Callable[[int, int | None], None] | None, Callable[[], None]]:
    """A progress bar on a terminal; log lines print above it (see log.configure)."""
    if not enabled:
        return None, lambda: None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        "orders",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task("orders", total=None)
    progress.start()

    def update(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    return update, progress.stop


def _run(
    config_file: Path,
    mode: Mode,
    *,
    dry_run: bool,
    as_json: bool,
    since: str | None = None,
    until: str | None = None,
    retry_all: bool = False,
    accounts: list[str] | None = None,
) -> None:
    from connector.app import open_pipeline

    # Handlers installed (the real command): their process-wide event; in-process (tests): none.
    stop = signals.STOP if signals.installed() else threading.Event()
    with (
        _errors(),
        _json_on_error(mode, enabled=as_json),
        _json_if_stopped_before_the_run(as_json),
    ):
        cfg, secrets = _load(config_file)
        start, end = _parse_date(since, "--since"), _parse_date(until, "--until")
        on_progress, stop_progress = _progress(
            mode == "backfill" and not as_json and err.is_terminal
        )
        with open_pipeline(
            cfg, secrets, on_progress=on_progress, stop=stop, accounts=accounts
        ) as p:
            signals.run_started()  # from here a signal lets the record in progress finish
            _RUN_STARTED.set()
            try:
                report = p.engine.run(
                    mode,
                    dry_run=dry_run,
                    since=start,
                    until=end,
                    retry_all=retry_all,
                    sink=_PrintedPlan(enabled=dry_run and not as_json),
                )
            finally:
                stop_progress()
        if as_json:
            print(
                json.dumps(
                    {
                        **report.as_json(),
                        "status": report.status,
                        "error": REDACTOR.scrub(report.error) if report.error else None,
                        "exit_code": report.exit_code,
                    }
                )
            )
        else:
            _print_report(report, state=_safe_url(cfg.state_url))
        if report.error:
            err.print(
                f"[bold red]error:[/] {escape(REDACTOR.scrub(report.error))}",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(report.exit_code)


@contextmanager
def _json_if_stopped_before_the_run(as_json: bool) -> Iterator[None]:
    try:
        yield
    except signals.Interrupted as exc:
        if as_json:
            _print_json_error(
                f"stopped by {exc.signal_name} before the run started",
                1,
                status="interrupted",
            )
        raise


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class _PrintedPlan:
    """The run's sink (`engine.RunSink`): a dry run's plan printed page by page as it is made,
    so a dry run over a million accounts holds one page of it, not all. Decisions are counted
    in the report; nothing else is kept."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.started = False

    def planned(self, plans: Any) -> None:
        if not self.enabled:
            return
        if not self.started:
            self.started = True
            out.print("[bold]plan (nothing was written)[/]", highlight=False)
            out.print(
                f"{'action':<10} {'account':<18} {'billing account':<16} {'customer':<20} "
                "changed fields / reason",
                highlight=False,
            )
        for p in plans:
            out.print(
                f"{p.action:<10} {p.account_id:<18} {p.billing_account:<16} "
                f"{p.customer_id or '-':<20} {p.detail()}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    def decided(self, decisions: Any) -> None:
        pass


def _print_report(report: Any, *, state: str | None = None) -> None:
    out.print(
        f"[bold]{report.mode}{' (dry run)' if report.dry_run else ''}[/] {report.status}, run {report.run_id}",
        highlight=False,
    )
    out.print(report.summary(), highlight=False)
    if state:
        out.print(f"state: {state}", highlight=False)


# --- commands ------------------------------------------------------------------------------------


@app.command()
def sync(
    config: ConfigOpt = Path("config.yaml"),
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Retry every failed record now, not only those due."),
    ] = False,
    account: AccountOpt = None,
) -> None:
    """One incremental pass: orders, accounts and contacts changed since the last run."""
    _run(config, "sync", dry_run=dry_run, as_json=as_json, retry_all=retry_failed, accounts=account)


@app.command()
def backfill(
    config: ConfigOpt = Path("config.yaml"),
    since: Annotated[
        str | None, typer.Option(help="Only orders activated on or after this date.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only orders activated before this date.")
    ] = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    account: AccountOpt = None,
) -> None:
    """Every activated order in the window; resumes where a crashed backfill stopped."""
    _run(
        config,
        "backfill",
        dry_run=dry_run,
        as_json=as_json,
        since=since,
        until=until,
        accounts=account,
    )


@app.command()
def status(config: ConfigOpt = Path("config.yaml"), as_json: JsonOpt = False) -> None:
    """Last runs, failing records and open conflicts."""

    with _errors(as_json=as_json):
        cfg, _ = _load(config)
        with _opened_store(cfg) as store:
            runs = store.runs.recent(limit=10)
            failures = store.runs.recent_failures(limit=50)
            conflicts = store.conflicts.list("open")
            stats = store.stats()
    if as_json:
        print(
            json.dumps(
                {
                    "runs": [
                        {
                            "run_id": r.run_id,
                            "mode": r.mode,
                            "status": r.status,
                            "started_at": r.started_at.isoformat(),
                            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                            **r.counts,
                            "error": REDACTOR.scrub(r.error) if r.error else None,
                        }
                        for r in runs
                    ],
                    "failures": [
                        {
                            "at": at.isoformat(),
                            "run_id": run_id,
                            "account_id": o.account_id,
                            "billing_account": o.billing_account,
                            "error_code": o.error_code,
                            "error": REDACTOR.scrub(o.error_message or ""),
                        }
                        for at, run_id, o in failures
                    ],
                    "conflicts": [
                        {
                            "id": c.id,
                            "kind": c.kind,
                            "account_id": c.account_id,
                            "customer_id": c.customer_id,
                            "created_at": c.created_at.isoformat(),
                        }
                        for c in conflicts
                    ],
                    "stats": stats,
                    # Per billing account: its links by status, failing records, open conflicts.
                    "billing_accounts": {
                        a.id: {
                            "links": dict(stats.get("links", {}).get(a.id, {})),
                            "failures": sum(1 for _, _, o in failures if o.billing_account == a.id),
                            "conflicts": sum(1 for c in conflicts if c.billing_account == a.id),
                        }
                        for a in cfg.billing.accounts
                    },
                },
                default=str,
            )
        )
        return
    t = Table(title="last runs", box=None, title_justify="left", pad_edge=False)
    for col in (
        "started",
        "mode",
        "status",
        "created",
        "updated",
        "unchanged",
        "refused",
        "failed",
    ):
        t.add_column(col, no_wrap=True)
    for r in runs:
        counts = r.counts
        t.add_row(
            r.started_at.strftime("%m-%d %H:%M:%S"),
            r.mode,
            r.status,
            *(
                str(counts.get(k, 0))
                for k in ("created", "updated", "unchanged", "refused", "failed")
            ),
        )
    out.print(t)
    if runs and runs[0].error:
        out.print(
            f"last run's error: {REDACTOR.scrub(runs[0].error)}", highlight=False, markup=False
        )
    # Plain lines rather than tables: error texts are long and must stay readable at 80 columns.
    links = "; ".join(
        f"{ba}: " + ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
        for ba, by_status in sorted(stats.get("links", {}).items())
    )
    retries = stats.get("retries", {})
    out.print(
        f"links: {links or 'none'} | retries due {retries.get('due', 0)} of {retries.get('total', 0)}"
        f" | open intents {stats.get('open_intents', 0)}",
        highlight=False,
    )
    for name, cursor in sorted(stats.get("cursors", {}).items()):
        if cursor.get("value"):
            out.print(f"cursor {name}: {cursor['value']}", highlight=False)
    for name, who in sorted(stats.get("partitions", {}).items()):
        # Daemon replicas (or a one-shot sync) running now, one line per partition.
        out.print(
            f"{name}: held by {who.get('holder')} since {who.get('since')}",
            highlight=False,
            markup=False,
        )
    if failures:
        out.print(f"\nfailing records ({len(failures)}, latest first):")
        for at, _run_id, o in failures:
            message = REDACTOR.scrub(f"{o.error_code}: {o.error_message}")
            out.print(
                f"  {at:%Y-%m-%d %H:%M:%S}  {o.account_id}  [{o.billing_account}]  {message}",
                highlight=False,
                markup=False,
            )
    if conflicts:
        out.print(
            f"\nopen conflicts ({len(conflicts)}; `billing-connector conflicts list` shows the choices):"
        )
        for c in conflicts:
            out.print(
                f"  #{c.id} {c.kind}: account {c.account_id}, customer {c.customer_id or '-'}, "
                f"since {c.created_at:%Y-%m-%d %H:%M}",
                highlight=False,
            )
    out.print(f"state: {store.url}", highlight=False)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = Path("config.yaml")) -> None:
    """Apply the state store's migrations (also done on start unless state.auto_migrate is false)."""
    with _errors():
        cfg, _ = _load(config)
        with _opened_store(cfg, migrate=True) as store:
            out.print(
                f"state store at revision {store.current_revision()}: {store.url}", highlight=False
            )


def _query_plan_warnings(cfg: Config, source: Any, folder: Path) -> list[Any]:
    """A warning for each query of a sync that Salesforce's optimizer answers with a TableScan."""
    from connector.app import account_mappings
    from connector.mapping import load_mappings
    from connector.mapping.spec import Problem
    from connector.query_plans import table_scans

    shared = load_mappings(folder)
    mappings = [shared, *account_mappings(cfg, shared).values()]
    where = cfg.source_file or folder
    return [
        Problem(Path(where), 1, 1, f"query plan: {w.message()}", "warning")
        for w in table_scans(source, mappings, list(cfg.billing.writeback_fields().values()))
    ]


@mappings_app.command("check")
def mappings_check(
    config: ConfigOpt = Path("config.yaml"),
    mappings_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Mappings folder (default: from config, else ./mappings)."),
    ] = None,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also ask Salesforce that every source field exists, and warn about every "
            "query whose plan is a full table scan.",
        ),
    ] = False,
) -> None:
    """Validate every mapping file (the shared folder and each billing account's own) and the
    routing rules; print each problem as file:line:column: message."""
    from connector.mapping import check_mappings
    from connector.mapping.accounts import check_account_mappings
    from connector.mapping.spec import Problem
    from connector.routing import check_routing
    from connector.yaml_source import load_positioned

    with _errors():
        cfg: Config | None = None
        if online or (mappings_dir is None and config.exists()):
            cfg, secrets = _load(config)
        folder = mappings_dir or (cfg.mappings_path if cfg else Path("mappings"))
        accounts = [a.id for a in cfg.billing.accounts] if cfg else []

        def check(describe: Any = None) -> list[Problem]:
            if cfg is None:
                return check_mappings(folder, describe=describe)
            found = check_account_mappings(folder, accounts, describe=describe)
            from connector.app import mapping_system_problems

            found.extend(mapping_system_problems(cfg, folder))
            if mappings_dir is None:
                from connector.app import check_group_mappings

                found.extend(check_group_mappings(cfg))
            if cfg.routing is not None and cfg.source_file is not None:
                doc = load_positioned(cfg.source_file)
                for rp in check_routing(cfg.routing, accounts, describe=describe):
                    pos = doc.where(rp.where)
                    found.append(
                        Problem(cfg.source_file, pos.line, pos.column, rp.message, rp.severity)
                    )
            return found

        describe = None
        source = None
        if online:
            assert cfg is not None
            problems = check()  # offline first: never contact Salesforce with a broken file
            if not any(p.severity == "error" for p in problems):
                from connector.app import connect_source

                source = connect_source(cfg, secrets)
                describe = source.describe
        problems = check(describe)
        if (
            source is not None
            and cfg is not None
            and not any(p.severity == "error" for p in problems)
        ):
            problems.extend(_query_plan_warnings(cfg, source, folder))
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        (err if p.severity == "error" else out).print(
            str(p), highlight=False, markup=False, soft_wrap=True
        )
    if errors:
        err.print(f"{len(errors)} error(s) in {folder}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    out.print(
        f"mappings in {folder}: ok ({len(problems)} warning(s))", highlight=False, soft_wrap=True
    )


@mappings_app.command("preview")
def mappings_preview(
    config: ConfigOpt = Path("config.yaml"),
    account: Annotated[str | None, typer.Option("--account", help="Salesforce Account Id.")] = None,
    order: Annotated[str | None, typer.Option("--order", help="Salesforce Order Id.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the payload that would be sent for an account or order, and the difference from what billing holds now."""
    from connector.app import open_pipeline

    if not account and not order:
        err.print("error: give --account ID or --order ID")
        raise typer.Exit(2)
    with _errors(as_json=as_json):
        account, order = (
            _sf_id_option(account, "--account", "001"),
            _sf_id_option(order, "--order", "801"),
        )
        cfg, secrets = _load(config)
        with open_pipeline(cfg, secrets, lock=False) as p:
            rows = [
                r
                for page in p.source.activated_orders(
                    p.engine.fields,
                    watch=p.engine.watch,
                    account_ids=[account] if account else None,
                )
                for r in page.rows
                if not order or r.order_id == order
            ]
            if not rows:
                raise ConfigError(
                    f"no activated order found for {'account ' + account if account else 'order ' + str(order)}"
                )
            row = max(rows, key=lambda r: r.basis_key)
            result: dict[str, Any] = {
                "account_id": row.account_id,
                "order_id": row.order_id,
                "billing_accounts": [],
            }
            for target in p.targets:
                link = p.store.links.get(target.name, row.account_id)

                def linked(account_id: str, ba: str = target.name) -> str | None:
                    other = p.store.links.get(ba, account_id)
                    return other.customer_id if other and other.status == "active" else None

                payload = p.mapping.evaluate(row.record, link=linked)
                entry: dict[str, Any] = {
                    "billing_account": target.name,
                    "payload": payload,
                    "customer_id": link.customer_id if link else None,
                }
                if link:
                    remote = target.fetch_customer(link.customer_id)
                    if remote is not None:
                        current = {k: _dig(remote.payload, k) for k in flatten(payload)}
                        entry["changes"] = {
                            k: {"stripe": current.get(k), "new": v}
                            for k, v in flatten(payload).items()
                            if k in diff_payloads(_unflatten(current), payload)
                        }
                result["billing_accounts"].append(entry)
    if as_json:
        print(json.dumps(result, default=str))
        return
    out.print(f"account {result['account_id']} (from order {result['order_id']})", highlight=False)
    for entry in result["billing_accounts"]:
        t = Table(
            title=f"billing account {entry['billing_account']}: customer {entry['customer_id'] or '(would be created)'}"
        )
        t.add_column("field")
        t.add_column("would send")
        t.add_column("in billing now")
        changes = entry.get("changes", {})
        for k, v in flatten(entry["payload"]).items():
            t.add_row(
                k,
                repr(v),
                repr(changes[k]["stripe"])
                if k in changes
                else ("(same)" if entry["customer_id"] else ""),
            )
        out.print(t)


def _sf_id_option(value: str | None, option: str, prefix: str) -> str | None:
    """A Salesforce id option in its 18-character form (the 15-character URL form is accepted)."""
    from connector.sfid import SalesforceIdError, normalize_sf_id

    if value is None:
        return None
    try:
        return normalize_sf_id(value, prefix=prefix, what=option.lstrip("-") + " id")
    except SalesforceIdError as exc:
        raise ConfigError(str(exc), key=option) from None


def _dig(data: Any, dotted: str) -> Any:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for k, v in flat.items():
        node = result
        parts = k.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = v
    return result


def _admin() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextmanager
def _opened_store(cfg: Config, *, migrate: bool | None = None) -> Iterator[Any]:
    """The state store, for commands that read or fix it outside a sync run."""
    from connector.state.store import StateStore

    auto = cfg.state.auto_migrate if migrate is None else migrate
    store = StateStore.open(cfg.state_url, auto_migrate=auto)
    try:
        yield store
    finally:
        store.close()


@conflicts_app.command("list")
def conflicts_list(
    config: ConfigOpt = Path("config.yaml"),
    all_: Annotated[bool, typer.Option("--all", help="Include resolved conflicts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Each conflict with what happened and the choices an admin has."""
    from connector.admin import CONFLICT_CHOICES

    with _errors(as_json=as_json):
        cfg, _ = _load(config)
        with _opened_store(cfg) as store:
            conflicts = store.conflicts.list(None if all_ else "open")
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": c.id,
                        "kind": c.kind,
                        "status": c.status,
                        "billing_account": c.billing_account,
                        "account_id": c.account_id,
                        "other_account_id": c.other_account_id,
                        "customer_id": c.customer_id,
                        "details": c.details,
                        "created_at": c.created_at.isoformat(),
                        "resolution": c.resolution,
                        "resolved_by": c.resolved_by,
                        "resolved_at": c.resolved_at.isoformat() if c.resolved_at else None,
                        "choices": list(CONFLICT_CHOICES.get(c.kind, ())),
                    }
                    for c in conflicts
                ],
                default=str,
            )
        )
        return
    if not conflicts:
        out.print("no open conflicts" if not all_ else "no conflicts")
        return
    for c in conflicts:
        out.print(
            f"[bold]#{c.id} {c.kind}[/] ({c.status}) billing account {c.billing_account}, "
            f"account {c.account_id}, customer {c.customer_id or '-'}, since {c.created_at:%Y-%m-%d %H:%M}",
            highlight=False,
        )
        message = c.details.get("message") or c.details.get("reason")
        if message:
            out.print(f"   {message}", highlight=False)
        if c.status == "open":
            for choice in CONFLICT_CHOICES.get(c.kind, ()):
                out.print(
                    f"   billing-connector conflicts resolve {c.id} {choice}",
                    highlight=False,
                    markup=False,
                )
        else:
            out.print(
                f"   resolved: {c.resolution} by {c.resolved_by} at {c.resolved_at:%Y-%m-%d %H:%M}",
                highlight=False,
            )


@conflicts_app.command("resolve")
def conflicts_resolve(
    conflict_id: Annotated[
        int, typer.Argument(help="The conflict's number, from `conflicts list`.")
    ],
    config: ConfigOpt = Path("config.yaml"),
    link: Annotated[
        str | None, typer.Option("--link", help="Link the held account to this existing customer.")
    ] = None,
    new: Annotated[
        bool,
        typer.Option("--new", help="Create a new customer for the held account on the next run."),
    ] = False,
    ignore: Annotated[
        bool, typer.Option("--ignore", help="Close the conflict; normal rules apply again.")
    ] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who decides (default: the current user).")
    ] = None,
) -> None:
    """Record an admin's decision on a conflict (exactly one of --link, --new, --ignore)."""
    from connector.admin import check_conflict_id, check_customer_id, resolve_conflict
    from connector.app import build_targets

    if sum([link is not None, new, ignore]) != 1:
        err.print("error: give exactly one of --link CUSTOMER, --new, --ignore")
        raise typer.Exit(2)
    # `--link ""` (an unset shell variable) is a link with a bad value, never a quiet --ignore.
    choice = "link" if link is not None else "new" if new else "ignore"
    with _errors():
        check_conflict_id(conflict_id)
        if link is not None:
            link = check_customer_id(link, argument="--link")
        cfg, secrets = _load(config)
        targets = build_targets(cfg, secrets) if choice == "link" else []
        with _opened_store(cfg) as store:
            resolved = resolve_conflict(
                store, targets, conflict_id, choice=choice, customer_id=link, by=by or _admin()
            )
    out.print(
        f"conflict #{resolved.id} resolved: {resolved.resolution} by {resolved.resolved_by}",
        highlight=False,
    )


@xref_app.command("show")
def xref_show(
    account: Annotated[str, typer.Argument(help="Salesforce Account Id.")],
    config: ConfigOpt = Path("config.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Everything the store knows about one account: links, conflicts, retries, last outcomes."""
    from connector.admin import check_account_id

    with _errors(as_json=as_json):
        account = check_account_id(account, argument="ACCOUNT")
        cfg, _ = _load(config)
        with _opened_store(cfg) as store:
            info: dict[str, Any] = {"account_id": account, "billing_accounts": []}
            links = {a.id: store.links.get(a.id, account) for a in cfg.billing.accounts}
            for acct in cfg.billing.accounts:
                link = links[acct.id]
                group = cfg.billing.group_of(acct.id)
                # A customer of a sharing group: created in one member (the links of the others
                # name it; links older than that column: the member whose link is oldest), used
                # from the others by the same id.
                sharing = [
                    ln
                    for m in (group.accounts if group and link else ())
                    if (ln := links.get(m)) is not None and ln.customer_id == link.customer_id
                ]
                named = {ln.shared_from for ln in sharing if ln.shared_from}
                creator = (
                    (
                        named.pop()
                        if len(named) == 1
                        else min(sharing, key=lambda ln: ln.first_synced_at).billing_account
                    )
                    if len(sharing) > 1
                    else None
                )
                retries = [r for r in store.retries.all(acct.id) if r.account_id == account]
                info["billing_accounts"].append(
                    {
                        "billing_account": acct.id,
                        "customer_id": link.customer_id if link else None,
                        "status": link.status if link else None,
                        "first_synced_at": link.first_synced_at.isoformat()
                        if link and link.first_synced_at
                        else None,
                        "last_synced_at": link.last_synced_at.isoformat()
                        if link and link.last_synced_at
                        else None,
                        "writeback_pending": link.writeback_pending if link else None,
                        "basis_order_id": link.basis_order_id if link else None,
                        "sharing_group": group.label if group else None,
                        # Chargebee: the business entity this billing account writes under
                        "business_entity": acct.business_entity_id,
                        "created_in": creator,
                        "used_from": sorted(ln.billing_account for ln in sharing)
                        if creator
                        else [],
                        "retry": {
                            "attempts": retries[0].attempts,
                            "next_attempt_at": retries[0].next_attempt_at.isoformat(),
                            "last_error": retries[0].last_error,
                        }
                        if retries
                        else None,
                    }
                )
            info["conflicts"] = [
                {
                    "id": c.id,
                    "kind": c.kind,
                    "status": c.status,
                    "customer_id": c.customer_id,
                    "resolution": c.resolution,
                }
                for c in store.conflicts.list(None)
                if account in (c.account_id, c.other_account_id)
            ]
    if as_json:
        print(json.dumps(info, default=str))
        return
    for b in info["billing_accounts"]:
        out.print(
            f"{account} -> {b['customer_id'] or '(not linked)'} in billing account {b['billing_account']}"
            + (
                f" [{b['status']}], last synced {b['last_synced_at']}, write-back "
                f"{'pending' if b['writeback_pending'] else 'done'}"
                + (
                    f", shared in group {b['sharing_group']} (created in {b['created_in']})"
                    if b["created_in"]
                    else ""
                )
                if b["customer_id"]
                else ""
            ),
            highlight=False,
        )
        if b["retry"]:
            out.print(
                f"   failing: {b['retry']['last_error']} (attempt {b['retry']['attempts']}, next {b['retry']['next_attempt_at']})",
                highlight=False,
            )
    for c in info["conflicts"]:
        out.print(
            f"   conflict #{c['id']} {c['kind']} ({c['status']}{', ' + c['resolution'] if c['resolution'] else ''})",
            highlight=False,
        )


@xref_app.command("link")
def xref_link(
    account: Annotated[str, typer.Argument(help="Salesforce Account Id.")],
    customer: Annotated[str, typer.Argument(help="Existing billing customer id (cus_...).")],
    config: ConfigOpt = Path("config.yaml"),
    billing_account: Annotated[
        str | None,
        typer.Option("--billing-account", help="Billing account id (default: the first)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Move an existing link to this customer.")
    ] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who decides (default: the current user).")
    ] = None,
) -> None:
    """Link an account to an existing customer (support work); the next run updates it."""
    from connector.admin import check_account_id, check_customer_id, link_account
    from connector.app import build_targets

    with _errors():
        # Checked before anything is opened: a bad argument changes nothing and contacts nothing.
        account = check_account_id(account, argument="ACCOUNT")
        customer = check_customer_id(customer, argument="CUSTOMER")
        cfg, secrets = _load(config)
        targets = build_targets(cfg, secrets)
        target = next((t for t in targets if t.name == (billing_account or targets[0].name)), None)
        if target is None:
            raise ConfigError(f"no billing account '{billing_account}' in the configuration")
        with _opened_store(cfg) as store:
            link_account(store, target, account, customer, by=by or _admin(), force=force)
    out.print(
        f"{account} linked to {customer} in billing account {target.name}; the next sync updates it",
        highlight=False,
    )


@app.command()
def sandbox(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="YAML or JSON data set (default: the sample). Its 'stripe' section may add "
            "accounts, organizations and sharing_groups beside the default account.",
        ),
    ] = None,
    salesforce_port: Annotated[
        int, typer.Option(help="Port of the Salesforce sandbox (0: any free port).")
    ] = 8701,
    stripe_port: Annotated[
        int, typer.Option(help="Port of the Stripe sandbox (0: any free port).")
    ] = 8702,
    stripe_rate_limits: Annotated[
        bool,
        typer.Option(
            help="Enforce Stripe's rate limits: a global cap per account and a budget per endpoint."
        ),
    ] = True,
    stripe_burst: Annotated[
        float,
        typer.Option(min=1.0, help="Requests each Stripe limiter lets through back to back."),
    ] = 5.0,
    stripe_global_rate: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Global Stripe cap per account, requests/s (default: Stripe's, 100 live, 25 test).",
        ),
    ] = None,
    stripe_endpoint_rate: Annotated[
        float,
        typer.Option(
            min=0.001, help="Stripe budget per endpoint, requests/s (Search keeps its 20)."
        ),
    ] = 25.0,
    stripe_latency: Annotated[
        float, typer.Option(min=0.0, help="Seconds added to every Stripe request.")
    ] = 0.0,
    salesforce_latency: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds added to every Salesforce request (each query page)."),
    ] = 0.0,
) -> None:
    """Run the local Salesforce org and Stripe account(s) until interrupted."""
    from connector.sandbox.run import start_sandboxes
    from connector.sandbox.stripe_limits import RateLimits

    limits = (
        RateLimits(
            burst=stripe_burst, global_rate=stripe_global_rate, endpoint_rate=stripe_endpoint_rate
        )
        if stripe_rate_limits
        else None
    )
    with _errors():
        try:
            pair = start_sandboxes(
                data,
                salesforce_port=salesforce_port,
                stripe_port=stripe_port,
                stripe_limits=limits,
                stripe_latency=stripe_latency,
                salesforce_latency=salesforce_latency,
            )
        except (ValueError, OSError) as exc:
            raise ConfigError(f"sandbox: {exc}") from None
    # Plain print: these lines are meant to be copied, so no wrapping or markup.
    print(f"Salesforce sandbox: {pair.salesforce.url}\nStripe sandbox:     {pair.stripe.url}\n")
    if limits is not None:
        print(
            f"Stripe rate limits: global {stripe_global_rate or 'Stripe default (100 live, 25 test)'}/s "
            f"per account, {stripe_endpoint_rate:g}/s per endpoint (Search 20), burst {stripe_burst:g}\n"
        )
    print("config.yaml for these servers:\n")
    print(pair.config_snippet())
    print("Secrets for the sandbox only (they are not secret; real ones never go in files):")
    print(
        f"export SALESFORCE_ACCESS_TOKEN='{pair.access_token}'\nexport STRIPE_API_KEY='{pair.stripe_key}'\n"
    )
    accounts = pair.stripe_accounts_text()
    if accounts:
        print(accounts)
    # The servers are the run here: the first signal stops them cleanly (exit 0). Set before
    # saying "Ctrl-C to stop.", so a signal sent on reading it is a clean stop, not exit 1.
    stop = (
        signals.run_started("stopping the sandbox servers")
        if signals.installed()
        else threading.Event()
    )
    try:
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:  # in-process, without the handlers
        pass
    finally:
        pair.stop()


class DemoTarget(StrEnum):
    stripe = "stripe"
    chargebee = "chargebee"


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its state file.")] = Path(
        "demo-state"
    ),
    target: Annotated[
        DemoTarget,
        typer.Option(
            help="The billing system: stripe, or chargebee (a site with three business "
            "entities and customer sharing)."
        ),
    ] = DemoTarget.stripe,
) -> None:
    """Start the sandbox with the sample data, backfill, change a few accounts, sync, and show what happened."""
    from connector.sandbox.chargebee_demo import run_chargebee_demo
    from connector.sandbox.run import run_demo

    stop = (
        signals.run_started("stopping the demo after the step in progress")
        if signals.installed()
        else None
    )
    with _errors():
        code = (run_chargebee_demo if target is DemoTarget.chargebee else run_demo)(
            state_dir,
            console=out,
            stop=stop,
            log_level=_given.log_level or "warning",
            log_format=_given.log_format or "console",
        )
    raise typer.Exit(code)


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to write config.yaml and mappings/ (default: here).")
    ] = Path("."),
) -> None:
    """Write a commented config.yaml and the default mappings to start from (never overwrites)."""
    from connector.shipped import default_mappings_dir, example_config

    with _errors():
        mappings = default_mappings_dir()
        files = [(example_config(), directory / "config.yaml")] + [
            (f, directory / "mappings" / f.relative_to(mappings))
            for f in sorted(mappings.rglob("*"))
            if f.is_file() and "__pycache__" not in f.parts
        ]
        existing = [dest for _, dest in files if dest.exists() or dest.is_symlink()]
        if existing:
            more = f" (and {len(existing) - 1} more file(s))" if len(existing) > 1 else ""
            raise ConfigError(
                f"already exists{more}; init never overwrites a file: move it away or give "
                "another directory",
                file=existing[0],
            )
        for source, dest in files:
            dest.parent.mkdir(parents=True, exist_ok=True)
            text = source.read_bytes()
            if dest.name == "config.yaml" and dest.parent == directory:
                text = b"# Written by `billing-connector init`; edit it for your org.\n" + text
            # "x": exclusive create, so a file that appeared since the check is not overwritten.
            with dest.open("xb") as fh:
                fh.write(text)
    config = directory / "config.yaml"
    out.print(f"wrote {config} and {len(files) - 1} mapping file(s) in {directory / 'mappings'}")
    out.print(
        "next: edit the config (every key is explained in it), export the secrets it names, then\n"
        f"  billing-connector -c {config} mappings check --online\n"
        f"  billing-connector -c {config} backfill --dry-run",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# --- the daemon and its history (issue 16) -------------------------------------------------------


@app.command()
def run(
    config: ConfigOpt = Path("config.yaml"),
    health_port: Annotated[
        int | None,
        typer.Option(
            "--health-port", help="Serve /livez, /readyz and /metrics on this port (0: any free)."
        ),
    ] = None,
    health_host: Annotated[
        str | None,
        typer.Option("--health-host", help="Address for the health port (default 127.0.0.1)."),
    ] = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="One tick (every partition this process gets), then exit."),
    ] = False,
) -> None:
    """The daemon: sync on the schedule in config until SIGTERM or SIGINT (then exit 0)."""
    from connector.daemon import Daemon, stop_on_signals
    from connector.health import HealthServer
    from connector.log import get_logger

    log = get_logger("connector.cli")
    stop = threading.Event()
    # Signals first: a stop during start-up is a clean stop too.
    with _errors(), stop_on_signals(stop):
        cfg, secrets = _load(config)
        port = health_port if health_port is not None else cfg.health.port
        with Daemon(cfg, secrets, stop=stop) as daemon:
            server = None
            if port is not None:
                try:
                    server = HealthServer(
                        daemon.health,
                        daemon.metrics,
                        host=health_host or cfg.health.host,
                        port=port,
                    ).start()
                except OSError as exc:
                    raise ConfigError(
                        f"cannot listen on {health_host or cfg.health.host}:{port}: {exc.strerror}",
                        key="--health-port",
                    ) from None
                host, bound = server.address
                log.info("health.listening", host=host, port=bound)
            try:
                if once:
                    result = daemon.tick()
                    code = max([r.exit_code for r in result.reports.values()] or [0])
                    if daemon.fatal is not None:
                        code = daemon.fatal.exit_code
                else:
                    code = daemon.serve()
            finally:
                if server is not None:
                    server.stop()
    raise typer.Exit(code)


class HistoryFormat(StrEnum):
    csv = "csv"
    json = "json"


HISTORY_COLUMNS = (
    "at",
    "run_id",
    "billing_account",
    "account_id",
    "order_id",
    "outcome",
    "customer_id",
    "error_code",
    "error_message",
    "changed_fields",
)


@app.command()
def history(
    config: ConfigOpt = Path("config.yaml"),
    failed: Annotated[
        bool, typer.Option("--failed", help="Only records that failed or were refused.")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="Only outcomes on or after this date (UTC).")
    ] = None,
    fmt: Annotated[
        HistoryFormat, typer.Option("--format", help="csv or json (a JSON array).")
    ] = HistoryFormat.csv,
) -> None:
    """Export what happened to each account in each run, with the error an admin needs."""
    import csv

    with _errors():
        cfg = load_config(config)
        start = _parse_date(since, "--since")
        with _opened_store(cfg) as store:
            rows = (
                {
                    "at": at.isoformat(timespec="seconds"),
                    "run_id": run_id,
                    "billing_account": o.billing_account,
                    "account_id": o.account_id,
                    "order_id": o.order_id or "",
                    "outcome": o.outcome,
                    "customer_id": o.customer_id or "",
                    "error_code": o.error_code or "",
                    # Errors can quote what a service answered: redacted like every log line.
                    "error_message": REDACTOR.scrub(o.error_message or ""),
                    "changed_fields": ";".join(o.changed_fields),
                }
                for at, run_id, o in store.runs.iter_outcomes(failed_only=failed, since=start)
            )
            if fmt is HistoryFormat.csv:
                writer = csv.DictWriter(sys.stdout, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
                writer.writeheader()
                for row in rows:
                    writer.writerow(row)
            else:
                # Streamed, so a long history never sits in memory as one list.
                sys.stdout.write("[")
                for n, row in enumerate(rows):
                    sys.stdout.write(("," if n else "") + "\n" + json.dumps(row))
                sys.stdout.write("\n]\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
