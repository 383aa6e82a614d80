"""Each thread that calls Salesforce at a time has a Session of its own: the engine's thread, the
next-page prefetch and the write-back worker no longer share one `requests.Session` (requests
does not promise that a Session is thread-safe). Every client is over the one login, and every
answer is counted once in the run's API usage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

from connector.app import connect_source, open_pipeline
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.salesforce import LoopbackAdapter
from connector.sandbox.run import SandboxPair


def test_a_call_made_while_another_holds_a_client_gets_a_session_of_its_own(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    source = connect_source(make_config(), secrets)
    assert source.clients is not None
    sent_before = sandboxes.salesforce.stats()["total"]
    counted_before = source.usage.calls

    with source.clients.lease() as held:
        other: list[Any] = []
        described = source._call(lambda sf: other.append(sf) or sf.Account.describe())

    assert described["name"] == "Account"
    (second,) = other
    assert second is not held and second.session is not held.session
    # The same login: no second token, the same org and instance.
    assert second.session_id == held.session_id and second.sf_instance == held.sf_instance
    assert isinstance(second.session.get_adapter("https://x.invalid/"), LoopbackAdapter)
    # Counted once, by the run's one usage, as the org counted it.
    assert sandboxes.salesforce.stats()["total"] - sent_before == 1
    assert source.usage.calls - counted_before == 1
    # Handed back: the next call reuses an idle client instead of making a third.
    source.server_time()
    assert source.clients.made == 2


def test_no_session_is_used_by_two_threads_at_once_during_a_backfill(
    sandboxes: SandboxPair,
    make_config: Callable[..., Config],
    secrets: SecretSource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backfill prefetches the next page while it writes back the previous batch: the
    threads' requests go through Sessions of their own, and the run's count of calls is the
    org's."""
    sf = sandboxes.salesforce
    for i in range(450):
        acc = sf.create("Account", {"Name": f"Thread Customer {i:04d}", "BillingCountry": "Germany"})
        order = sf.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
        sf.update("Order", order, {"Status": "Activated"})
    cfg = make_config(
        salesforce={"page_size": 200},
        billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, "max_requests_per_second": 1000}]},
    )
    lock = threading.Lock()
    busy: dict[int, str] = {}  # id(session) -> the thread inside it
    shared: list[tuple[str, str]] = []
    threads_per_session: dict[int, set[str]] = {}
    original = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        if "/services/" not in (request.url or ""):
            return original(self, request, **kwargs)  # the Stripe client's
        me = threading.current_thread().name
        with lock:
            if id(self) in busy:
                shared.append((busy[id(self)], me))
            busy[id(self)] = me
            threads_per_session.setdefault(id(self), set()).add(me)
        try:
            return original(self, request, **kwargs)
        finally:
            with lock:
                busy.pop(id(self), None)

    monkeypatch.setattr(requests.Session, "send", send)
    before = sf.stats()["total"]

    with open_pipeline(cfg, secrets) as p:
        report: RunReport = p.engine.run("backfill")

    assert report.exit_code == 0 and report.created == 453 and report.failed == 0
    assert not shared, shared
    assert report.salesforce_calls == sf.stats()["total"] - before
    # The prefetch and the write-back worker did call Salesforce beside the engine's thread.
    callers = set().union(*threads_per_session.values())
    assert any(t.startswith("prefetch") for t in callers), callers
    assert any(t.startswith("writeback") for t in callers), callers
