"""Builds a ready engine from configuration: the one place that picks the adapters.

The CLI and (later) the daemon call `open_pipeline`; tests call it too, with the sandbox's URLs
in the config. Order matters for exit codes: config and mappings are loaded and checked before
anything is contacted (exit 2), then the store is opened and Salesforce logged in (exit 3).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from connector.billing import TARGET_KINDS, build_target
from connector.billing.base import BillingTarget
from connector.config import Config, SecretSource
from connector.engine import Engine
from connector.errors import ConfigError
from connector.mapping import CustomerMapping, load_mappings
from connector.partitions import hold_partitions, partitions_of
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


def connect_source(config: Config, secrets: SecretSource) -> SalesforceSource:
    """Log in to Salesforce with the Account fields the billing accounts write back to."""
    return connect(config.salesforce, secrets, writeback_fields=config.billing.writeback_fields())


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
) -> Engine:
    """An engine for `targets` (every billing account, or one daemon partition)."""
    return Engine(
        source=source,
        targets=targets,
        store=store,
        mapping=mapping,
        overlap_seconds=config.salesforce.overlap_seconds,
        # Until the engine writes back per account: the first account that has a field.
        writeback_billing_account=next(iter(config.billing.writeback_fields()), None),
        writeback_batch=config.salesforce.writeback_batch_size,
        salesforce_calls=lambda: source.usage.calls,
        on_progress=on_progress,
        stop=stop,
        before_write=before_write,
        cursor_scope=cursor_scope,
    )


@contextmanager
def open_pipeline(
    config: Config,
    secrets: SecretSource,
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
    stop: threading.Event | None = None,
    lock: bool = True,
) -> Iterator[Pipeline]:
    """Everything a run needs, with every partition's lock held for its duration (the daemon
    takes the same locks, so a one-shot command and `run` never write the same account)."""
    mapping = load_mappings(config.mappings_path)  # exit 2 before anything is contacted
    check_mapping_fits(config, mapping)
    targets = build_targets(config, secrets)  # a missing key is a config error too
    store = StateStore.open(config.state_url, auto_migrate=config.state.auto_migrate)
    try:
        parts = partitions_of(config) if lock else []
        with hold_partitions(store.locks, parts, holder_name()) as held:
            for p in parts:
                # Holding its lock, any run of the partition still marked running is dead.
                store.runs.mark_interrupted(p.billing_account)
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
            )
            yield Pipeline(config, mapping, store, source, targets, engine)
    finally:
        store.close()
