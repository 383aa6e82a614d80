"""Recorded StripeClient sessions against the sandbox replay offline with the same results.

The cassettes under tests/cassettes/stripe/ were recorded from the sandbox with
`RECORD_STRIPE_CASSETTES=1 pytest tests/test_stripe_contract_cassettes.py`; the API key is
scrubbed and the loopback port normalised to 12111. Replays run with a socket guard that
refuses every connect, so a request missing from a cassette fails instead of reaching a server.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe
import vcr
import yaml

from connector.sandbox.stripe import StripeSandbox

CASSETTES = Path(__file__).parent / "cassettes" / "stripe"
REPLAY_BASE = "http://127.0.0.1:12111"
KEY = "sk_test_cassette_recording_key"
SCRUBBED = "Bearer sk_test_REDACTED"


def normalise(request: Any) -> Any:
    request.uri = re.sub(r"^http://127\.0\.0\.1:\d+", REPLAY_BASE, request.uri)
    return request


def cassette_vcr(record_mode: str) -> vcr.VCR:
    return vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode=record_mode,
        match_on=["method", "scheme", "host", "port", "path", "query", "body"],
        filter_headers=[("authorization", SCRUBBED), ("x-stripe-client-user-agent", None), ("user-agent", None)],
        before_record_request=normalise,
        decode_compressed_response=True,
    )


class Ids:
    """Customer ids differ between runs; name them by first appearance."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, cid: str) -> str:
        return self.names.setdefault(cid, f"cus#{len(self.names)}")


def lifecycle(client: stripe.StripeClient) -> list[Any]:
    ids = Ids()
    out: list[Any] = []
    a = client.v1.customers.create(params={"name": "Acme GmbH", "email": "ops@acme.test", "metadata": {"sf_account_id": "001A"},
                                           "address": {"line1": "Hauptstr. 1", "country": "DE"}}, options={"idempotency_key": "cassette-a"})
    out.append(("create", ids(a.id), a.name, a.metadata.to_dict(), a.address.country))
    b = client.v1.customers.create(params={"name": "Initech", "metadata": {"sf_account_id": "001B"}}, options={"idempotency_key": "cassette-b"})
    out.append(("create", ids(b.id), b.name))
    got = client.v1.customers.retrieve(a.id)
    out.append(("retrieve", ids(got.id), got.email))
    upd = client.v1.customers.update(a.id, params={"metadata": {"sf_account_id": "", "tier": "gold"}, "address": ""},
                                     options={"idempotency_key": "cassette-a-update"})
    out.append(("update", ids(upd.id), upd.metadata.to_dict(), upd.address))
    page = client.v1.customers.list(params={"limit": 1})
    out.append(("list", [ids(c.id) for c in page.data], page.has_more))
    rest = client.v1.customers.list(params={"limit": 1, "starting_after": page.data[0].id})
    out.append(("list", [ids(c.id) for c in rest.data], rest.has_more))
    found = client.v1.customers.search(params={"query": "metadata['sf_account_id']:'001B'"})
    out.append(("search", [ids(c.id) for c in found.data]))
    gone = client.v1.customers.delete(b.id)
    out.append(("delete", ids(gone.id), gone.deleted))
    stub = client.v1.customers.retrieve(b.id)
    out.append(("retrieve", stub.to_dict() | {"id": ids(stub.id)}))
    return out


def errors(client: stripe.StripeClient) -> list[Any]:
    out: list[Any] = []
    calls: list[Callable[[], Any]] = [
        lambda: client.v1.customers.retrieve("cus_00000000000000"),
        lambda: client.v1.customers.create(params={"nickname": "x"}),  # type: ignore[typeddict-unknown-key]
        lambda: client.v1.customers.create(params={"name": "n" * 257}),
        lambda: client.v1.customers.create(params={"shipping": {"name": "Dock"}}),  # type: ignore[typeddict-item]
        lambda: client.v1.customers.search(params={"query": "name:'open"}),
    ]
    for call in calls:
        try:
            call()
            out.append(("no error",))
        except stripe.StripeError as exc:
            error = (exc.json_body or {}).get("error", {})
            out.append((type(exc).__name__, exc.http_status, error.get("code"), error.get("param")))
    return out


SESSIONS: dict[str, Callable[[stripe.StripeClient], list[Any]]] = {"customer_lifecycle": lifecycle, "customer_errors": errors}


def client_for(base: str) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": base}, max_network_retries=0)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(self: socket.socket, address: Any) -> None:
        raise ConnectionRefusedError(f"network blocked during replay: connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield


@pytest.mark.skipif(not os.environ.get("RECORD_STRIPE_CASSETTES"), reason="set RECORD_STRIPE_CASSETTES=1 to re-record the cassettes")
@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_record_cassettes(name: str) -> None:
    CASSETTES.mkdir(parents=True, exist_ok=True)
    (CASSETTES / f"{name}.yaml").unlink(missing_ok=True)
    with StripeSandbox() as sandbox, cassette_vcr("all").use_cassette(f"{name}.yaml"):
        SESSIONS[name](client_for(sandbox.url))


@pytest.fixture(scope="module")
def live_results() -> dict[str, list[Any]]:
    # Module scope: built before the function-scoped socket guard is in place.
    results = {}
    for name, session in SESSIONS.items():
        with StripeSandbox() as sandbox:
            results[name] = session(client_for(sandbox.url))
    return results


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_replay_without_network_gives_the_live_results(name: str, live_results: dict[str, list[Any]], no_network: None) -> None:
    with cassette_vcr("none").use_cassette(f"{name}.yaml") as cassette:
        replayed = SESSIONS[name](client_for(REPLAY_BASE))
        assert cassette.all_played
    assert replayed == live_results[name]


def test_replay_refuses_a_request_not_in_the_cassette(no_network: None) -> None:
    with cassette_vcr("none").use_cassette("customer_lifecycle.yaml"), pytest.raises(
        stripe.APIConnectionError, match="CannotOverwriteExistingCassetteException"
    ):
        client_for(REPLAY_BASE).v1.customers.retrieve("cus_NotRecorded0000")


def test_the_socket_guard_blocks_connections(no_network: None) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:9/v1/customers", timeout=2)


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_cassettes_are_scrubbed_and_normalised(name: str) -> None:
    text = (CASSETTES / f"{name}.yaml").read_text(encoding="utf-8")
    assert KEY not in text
    assert set(re.findall(r"127\.0\.0\.1:(\d+)", text)) == {"12111"}
    data = yaml.safe_load(text)
    for interaction in data["interactions"]:
        headers = {k.lower(): v for k, v in interaction["request"]["headers"].items()}
        assert headers["authorization"] == [SCRUBBED]
        assert "x-stripe-client-user-agent" not in headers
