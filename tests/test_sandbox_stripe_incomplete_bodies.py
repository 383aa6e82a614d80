"""A request whose body is cut short (the client killed mid-send) is dropped, never applied.

Issue 12: before, the sandbox applied the part that arrived: a customer without its metadata,
then a permanent idempotency error for the retry that carried the full body.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import stripe

from connector.sandbox.stripe import StripeSandbox

BODY = b"name=Half+Sent&metadata[salesforce_account_id]=001000000000001AAA"


@pytest.fixture
def sandbox() -> Iterator[StripeSandbox]:
    with StripeSandbox() as sb:
        yield sb


def _send_half_and_close(sandbox: StripeSandbox, *, key: str, reset: bool = False) -> None:
    head = (
        "POST /v1/customers HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{sandbox.port}\r\n"
        "Authorization: Bearer sk_test_incomplete\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Idempotency-Key: {key}\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", sandbox.port))
    sock.sendall(head + BODY[: len(BODY) // 2])
    if reset:  # a killed process: the kernel resets the connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_half_sent_body_is_dropped_and_the_full_retry_succeeds(sandbox: StripeSandbox, reset: bool) -> None:
    _send_half_and_close(sandbox, key="ik-half", reset=reset)
    assert sandbox.wait_until(lambda: sandbox.incomplete_bodies == 1)
    assert sandbox.customers() == []
    assert sandbox.stats()["requests"] == {}  # never reached the API
    # The client's retry with the same key and the whole body is a first request, not a replay
    # of a half-applied one.
    client = stripe.StripeClient("sk_test_incomplete", base_addresses={"api": sandbox.url}, max_network_retries=0)
    cus = client.v1.customers.create(
        params={"name": "Half Sent", "metadata": {"salesforce_account_id": "001000000000001AAA"}},
        options={"idempotency_key": "ik-half"},
    )
    assert cus.metadata.to_dict() == {"salesforce_account_id": "001000000000001AAA"}
    assert [c["id"] for c in sandbox.customers()] == [cus.id]
    assert sandbox.stats()["idempotent_replays"] == 0


def test_complete_body_on_a_raw_socket_is_applied(sandbox: StripeSandbox) -> None:
    """The control case: the same bytes sent in full create the customer."""
    head = (
        "POST /v1/customers HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{sandbox.port}\r\n"
        "Authorization: Bearer sk_test_incomplete\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sandbox.port)) as sock:
        sock.sendall(head + BODY)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert [c["metadata"] for c in sandbox.customers()] == [{"salesforce_account_id": "001000000000001AAA"}]
    assert sandbox.incomplete_bodies == 0
