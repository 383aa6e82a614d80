"""Builds a ready engine from configuration: the one place that picks the adapters.

The CLI and (later) the daemon call `open_pipeline`; tests call it too, with the sandbox's URLs
in the config. Order matters for exit codes: config and mappings are loaded and checked before
anything is contacted (exit 2), then the store is opened and Salesforce logged in (exit 3).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from connector import allocator
from connector.billing import TARGET_KINDS, build_target
from connector.billing.base import BillingTarget
from connector.config import Config, SecretSource
from connector.engine import Engine, SharingGroup
from connector.errors import ConfigError
from connector.mapping import CustomerMapping, MappingErrors, Problem, load_mappings
from connector.mapping.accounts import (
    check_shared_fields,
    load_account_mappings,
    mapping_folders,
)
from connector.partitions import hold_partitions, partitions_holding, partitions_of
from connector.salesforce import SalesforceSource, connect
from connector.state.store import StateStore


@dataclass
class Pipeline:
    config: Config
    mapping: CustomerMapping
    store: StateStore
    source: SalesforceSource
    targets: list[BillingTarget]
    engine: Engine


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_targets(config: Config, secrets: SecretSource) -> list[BillingTarget]:
    """One target per configured billing account, made by the factory its `kind` registers."""
    return [build_target(acct, secrets) for acct in config.billing.accounts]


def check_mapping_fits(config: Config, mapping: CustomerMapping) -> None:
    """Every billing account must be of the system the customer mapping builds for."""
    for i, acct in enumerate(config.billing.accounts):
        system = TARGET_KINDS[acct.kind].system
        if system != mapping.system:
            raise ConfigError(
                f"billing account '{acct.id}' is of kind {acct.kind!r} (system {system!r}) but "
                f"the customer mapping {mapping.file} builds for system {mapping.system!r}",
                file=config.source_file,
                key=f"billing.accounts.{i}.kind",
            )


def mapping_system_problems(config: Config, folder: Path) -> list[Problem]:
    """Billing accounts whose mapping builds for another system than their kind's (a Chargebee
    account reading the Stripe mapping): found by `mappings check`, before a run refuses it."""
    names = [a.id for a in config.billing.accounts]
    try:
        mappings = load_account_mappings(folder, names)
    except MappingErrors:
        return []  # the files' own errors are reported by whoever checks them
    out = []
    for acct in config.billing.accounts:
        system = TARGET_KINDS[acct.kind].system
        m = mappings[acct.id]
        if m.system != system:
            hint = (
                f" (point mappings_dir at {folder / system})" if (folder / system).is_dir() else ""
            )
            out.append(
                Problem(
                    m.file,
                    1,
                    1,
                    f"billing account '{acct.id}' is of kind {acct.kind!r} (system {system!r}) "
                    f"but this mapping builds for system {m.system!r}{hint}",
                )
            )
    return out


def connect_source(config: Config, secrets: SecretSource) -> SalesforceSource:
    """Log in to Salesforce with the Account fields the billing accounts write back to (and
    the fields routing rules read)."""
    return connect(
        config.salesforce,
        secrets,
        writeback_fields=config.billing.writeback_fields(),
        extra_fields=config.routing.soql_fields() if config.routing else (),
    )


def sharing_groups(config: Config) -> list[tuple[str, tuple[str, ...], frozenset[str]]]:
    """(label, member accounts, fields the members share) for each configured sharing group."""
    out = []
    for group in config.billing.sharing_groups:
        first = config.billing.account(group.accounts[0])
        shared_of = TARGET_KINDS[first.kind].shared_fields
        shared = frozenset[str]()
        if shared_of is not None:
            # Fields shared at every member's pinned version: what one of them writes, all see.
            sets = [shared_of(config.billing.account(n)) for n in group.accounts]
            shared = frozenset.intersection(*sets) if sets else shared
        out.append((group.label, group.accounts, shared))
    return out


def check_group_mappings(config: Config) -> list[Problem]:
    """Problems of sharing groups whose members' mappings disagree on a shared field."""
    if not config.billing.sharing_groups:
        return []
    names = [a.id for a in config.billing.accounts]
    try:
        mappings = load_account_mappings(config.mappings_path, names)
    except MappingErrors:
        return []  # the files' own errors are reported by whoever loads them
    return check_shared_fields(mappings, sharing_groups(config))


def account_mappings(config: Config, mapping: CustomerMapping) -> dict[str, CustomerMapping]:
    """The mappings of billing accounts with a folder of their own (mappings/<account>/); the
    others use the shared `mapping`. Each must build for the shared mapping's system."""
    names = [a.id for a in config.billing.accounts]
    own = {
        name: folder
        for name, folder in mapping_folders(config.mappings_path, names).items()
        if folder != config.mappings_path
    }
    per_account = load_account_mappings(config.mappings_path, list(own)) if own else {}
    for name, m in per_account.items():
        if m.system != mapping.system:
            raise ConfigError(
                f"billing account '{name}': its mapping {m.file} builds for system "
                f"{m.system!r}, the shared one for {mapping.system!r}",
                file=m.file,
            )
    return per_account


def engine_groups(config: Config, targets: Sequence[BillingTarget]) -> list[SharingGroup]:
    """The sharing groups an engine for `targets` applies. A group's customers are written by
    one member, so an engine runs all of a group's members or none: running some of them only
    (a daemon partition of one member) could create a second customer for the group."""
    names = {t.name for t in targets}
    out = []
    for g in config.billing.sharing_groups:
        inside = names & set(g.accounts)
        if not inside:
            continue
        if inside != set(g.accounts):
            raise ConfigError(
                f"sharing group {g.label}: this run has {', '.join(sorted(inside))} but not "
                f"{', '.join(sorted(set(g.accounts) - inside))}; a group's members run together",
                file=config.source_file,
                key="billing.sharing_groups",
            )
        out.append(SharingGroup(g.label, g.accounts, g.primary))
    return out


def make_engine(
    config: Config,
    *,
    mapping: CustomerMapping,
    store: StateStore,
    source: SalesforceSource,
    targets: list[BillingTarget],
    on_progress: Callable[[int, int | None], None] | None = None,
    stop: threading.Event | None = None,
    before_write: Callable[[], None] | None = None,
    cursor_scope: str | None = None,
    mappings: Mapping[str, CustomerMapping] | None = None,
) -> Engine:
    """An engine for `targets` (every billing account, some of them for `--account`, or one
    daemon partition), routing orders and sharing customers as configured. `mappings`: the
    per-account mappings when the caller has loaded them already."""
    return Engine(
        source=source,
        targets=targets,
        store=store,
        mapping=mapping,
        overlap_seconds=config.salesforce.overlap_seconds,
        # Each billing account's customer id goes to its own Account field (some have none); a
        # partition's engine writes back only for the accounts it runs.
        writeback_fields=config.billing.writeback_fields(),
        writeback_batch=config.salesforce.writeback_batch_size,
        salesforce_calls=lambda: source.usage.calls,
        on_progress=on_progress,
        stop=stop,
        before_write=before_write,
        cursor_scope=cursor_scope,
        routing=config.routing,
        sharing_groups=engine_groups(config, targets),
        mappings=account_mappings(config, mapping) if mappings is None else mappings,
        max_in_flight={a.id: a.max_in_flight for a in config.billing.accounts},
    )


@contextmanager
def open_pipeline(
    config: Config,
    secrets: SecretSource,
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
    stop: threading.Event | None = None,
    lock: bool = True,
    accounts: Sequence[str] | None = None,
) -> Iterator[Pipeline]:
    """Everything a run needs, with the lock of every partition it runs held for its duration
    (the daemon takes the same locks, so a one-shot command and `run` never write the same
    account).

    `accounts` limits the run to those billing accounts (`sync --account NAME`), with the other
    members of their sharing groups; it then holds only their partitions' locks (a replica may
    run the others meanwhile), and their cursors are their own, as a daemon partition's are."""
    known = [a.id for a in config.billing.accounts]
    # A Chargebee account with business entities names all of them (`--account chargebee`).
    accounts = [
        name
        for given in accounts or ()
        for name in (
            [given]
            if given in known
            else [a.id for a in config.billing.accounts if a.id.startswith(f"{given}.")] or [given]
        )
    ]
    unknown = [a for a in accounts if a not in known]
    if unknown:
        raise ConfigError(
            f"--account {unknown[0]}: no such billing account; configured: {', '.join(known)}",
            key="--account",
        )
    chosen = set(accounts or ())
    for group in config.billing.sharing_groups:
        # A group's customer is written by one member: running a member runs its group.
        if chosen & set(group.accounts):
            chosen |= set(group.accounts)
    only = sorted(chosen) if chosen and chosen != set(known) else None
    mapping = load_mappings(config.mappings_path)  # exit 2 before anything is contacted
    check_mapping_fits(config, mapping)
    disagreements = check_group_mappings(config)
    if disagreements:
        raise MappingErrors(disagreements)
    per_account = account_mappings(config, mapping)
    targets = build_targets(config, secrets)  # a missing key is a config error too
    if only is not None:
        targets = [t for t in targets if t.name in only]
    store = StateStore.open(config.state_url, auto_migrate=config.state.auto_migrate)
    try:
        parts = (
            []
            if not lock
            else partitions_of(config)
            if only is None
            else partitions_holding(config, only)
        )
        with hold_partitions(store.locks, parts, holder_name()) as held:
            for p in parts:
                # Holding its lock, any run of the partition still marked running is dead.
                for account in p.accounts:
                    store.runs.mark_interrupted(account)
            source = connect_source(config, secrets)
            engine = make_engine(
                config,
                mapping=mapping,
                store=store,
                source=source,
                targets=targets,
                on_progress=on_progress,
                stop=stop,
                before_write=held.check if lock else None,
                cursor_scope="+".join(only) if only is not None else None,
                mappings=per_account,
            )
            # Imports, config, clients and mappings live for the whole process: out of the
            # collector's scans from here on (see allocator.freeze_startup_objects).
            allocator.freeze_startup_objects()
            yield Pipeline(config, mapping, store, source, targets, engine)
    finally:
        store.close()
