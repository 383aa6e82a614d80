"""Builds a ready engine from configuration: the one place that picks the adapters.

The CLI and (later) the daemon call `open_pipeline`; tests call it too, with the sandbox's URLs
in the config. Order matters for exit codes: config and mappings are loaded and checked before
anything is contacted (exit 2), then the store is opened and Salesforce logged in (exit 3).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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
    """Everything a run needs, with the single-runner lock held for its duration.

    `accounts` limits the run to those billing accounts (`sync --account NAME`), with the other
    members of their sharing groups; their cursors are then their own."""
    known = [a.id for a in config.billing.accounts]
    unknown = [a for a in accounts or () if a not in known]
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
    names = [a.id for a in config.billing.accounts]
    # Accounts with a mapping folder of their own; the others use the shared mapping.
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
    targets = build_targets(config, secrets)  # a missing key is a config error too
    if only is not None:
        targets = [t for t in targets if t.name in only]
    store = StateStore.open(config.state_url, auto_migrate=config.state.auto_migrate)
    try:
        lock_cm = store.locks.hold("sync", holder=holder_name()) if lock else _null()
        with lock_cm:
            if lock:
                # Holding the lock, any run still marked running belongs to a dead process.
                store.runs.mark_interrupted()
            source = connect(
                config.salesforce,
                secrets,
                writeback_fields=config.billing.writeback_fields(),
                extra_fields=config.routing.soql_fields() if config.routing else (),
            )
            engine = Engine(
                source=source,
                targets=targets,
                store=store,
                mapping=mapping,
                overlap_seconds=config.salesforce.overlap_seconds,
                writeback_fields=config.billing.writeback_fields(),
                writeback_batch=config.salesforce.writeback_batch_size,
                salesforce_calls=lambda: source.usage.calls,
                on_progress=on_progress,
                stop=stop,
                routing=config.routing,
                cursor_scope="+".join(only) if only is not None else None,
                mappings=per_account,
                sharing_groups=[
                    SharingGroup(g.label, g.accounts, g.primary)
                    for g in config.billing.sharing_groups
                ],
            )
            yield Pipeline(config, mapping, store, source, targets, engine)
    finally:
        store.close()


@contextmanager
def _null() -> Iterator[None]:
    yield
