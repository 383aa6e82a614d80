"""Alerts go to a Slack-compatible webhook once per change of health, never once per run, and a
webhook that is down never stops anything."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from webhook_receiver import WebhookReceiver

from connector.alerts import Alerter


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    try:
        yield r
    finally:
        r.stop()


def test_one_message_when_unhealthy_none_while_it_stays_so_one_when_it_recovers(
    receiver: WebhookReceiver,
) -> None:
    alerter = Alerter(receiver.url, name="connector-test")
    try:
        failed = {"run_failed:main": "partition main: run abc failed: Stripe unreachable"}
        assert alerter.observe({}) is None  # healthy from the start: nothing to say
        assert alerter.observe(failed) is not None
        assert alerter.observe(failed) is None  # the same problem again is not news
        assert alerter.observe(failed) is None
        conflict = {**failed, "conflict:7": "conflict #7 opened: merge_both_linked"}
        assert alerter.observe(conflict) is not None  # a new problem is
        assert alerter.observe({}) is not None  # recovered
        assert alerter.observe({}) is None
        alerter.wait_delivered()
    finally:
        alerter.close()

    texts = [m["text"] for m in receiver.wait_for(3)]
    assert len(texts) == 3
    assert "unhealthy" in texts[0] and "Stripe unreachable" in texts[0]
    assert "conflict #7" in texts[1] and "Stripe unreachable" not in texts[1]
    assert "1 earlier problem" in texts[1]
    assert "recovered" in texts[2]
    assert all(set(m) == {"text"} for m in receiver.messages)


def test_a_webhook_that_is_down_is_logged_and_does_not_raise() -> None:
    # A port nothing listens on: bind one, then close it.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    alerter = Alerter(f"http://127.0.0.1:{port}/hook", timeout=2)
    try:
        assert alerter.observe({"run_failed:main": "failed"}) is not None
        alerter.wait_delivered()
        assert alerter.failed == 1 and alerter.sent == 0
        # The next change of state is still tried.
        assert alerter.observe({}) is not None
        alerter.wait_delivered()
        assert alerter.failed == 2
    finally:
        alerter.close()


def test_the_webhook_url_never_appears_in_a_message(receiver: WebhookReceiver) -> None:
    alerter = Alerter(receiver.url)
    try:
        alerter.observe({"run_failed:main": f"posting to {receiver.url} failed"})
        alerter.wait_delivered()
    finally:
        alerter.close()
    (message,) = receiver.wait_for(1)
    assert "secret-part" not in message["text"]
