"""A recorded simple-salesforce session against the sandbox replays offline with the same results.

The cassette in tests/cassettes/salesforce/ holds a short session (password login, paged query,
relationship query, update, sObject Collections, limits, a refused query) recorded from the
sandbox with the Authorization header, passwords, secrets and tokens scrubbed and the loopback
address written as 127.0.0.1:0. Re-record after a deliberate change in the sandbox or the sample
data with: SANDBOX_RECORD_CASSETTES=1 .venv/bin/python -m pytest tests/test_sandbox_salesforce_cassettes.py
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import vcr
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError
from vcr.request import Request as VcrRequest

from connector.salesforce import loopback_session
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.sample import ACME_ADOPTED, load_sample

CASSETTES = Path(__file__).parent / "cassettes" / "salesforce"
SESSION_CASSETTE = "session.yaml"
CLOCK = datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)
USER, PASSWORD, KEY, SECRET = (
    "admin@example.com",
    "sandbox-password",
    "sandbox-consumer-key",
    "sandbox-consumer-secret",
)
LOOPBACK = re.compile(r"http://127\.0\.0\.1:\d+")
NORMAL_HOST = "http://127.0.0.1:0"
SECRET_FORM_KEYS = {"password", "client_secret", "assertion", "client_assertion"}
SECRET_JSON_KEYS = {"access_token", "refresh_token", "signature", "id_token"}


def normalise(uri: str) -> str:
    return LOOPBACK.sub(NORMAL_HOST, uri)


def scrub_request(request: VcrRequest) -> VcrRequest:
    request.uri = normalise(request.uri)
    if request.path.endswith("/services/oauth2/token") and request.body:
        raw = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        form = [
            (k, "REDACTED" if k in SECRET_FORM_KEYS else v)
            for k, v in parse_qsl(raw, keep_blank_values=True)
        ]
        request.body = urlencode(form).encode()
    return request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response["body"]["string"]
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and SECRET_JSON_KEYS & set(data):
        data = {k: ("REDACTED" if k in SECRET_JSON_KEYS else v) for k, v in data.items()}
        text = json.dumps(data, separators=(",", ":"))
    response["body"]["string"] = normalise(text).encode("utf-8")
    response["headers"] = {
        k: v for k, v in response["headers"].items() if k.lower() != "content-length"
    }
    return response


def same_normalised_uri(r1: VcrRequest, r2: VcrRequest) -> None:
    assert normalise(r1.uri) == normalise(r2.uri)


def make_vcr(library: Path, record_mode: str) -> vcr.VCR:
    v = vcr.VCR(
        cassette_library_dir=str(library),
        record_mode=record_mode,
        filter_headers=["authorization", "cookie", "set-cookie"],
        before_record_request=scrub_request,
        before_record_response=scrub_response,
        match_on=["method", "normalised_uri"],
    )
    v.register_matcher("normalised_uri", same_normalised_uri)
    return v


def org_data() -> dict[str, Any]:
    data = load_sample()["salesforce"]
    data["Account"] = [*data["Account"], *({"Name": f"Filler {i:03d}"} for i in range(200))]
    return data


def scenario(target: str) -> dict[str, Any]:
    """The recorded session; returns everything the client saw, for comparison."""
    sf = Salesforce(
        username=USER,
        password=PASSWORD,
        consumer_key=KEY,
        consumer_secret=SECRET,
        session=loopback_session(target),
        version="62.0",
    )
    out: dict[str, Any] = {}
    page_opts = {"Sforce-Query-Options": "batchSize=200"}
    accounts = sf.query_all(
        "SELECT Id, Name, Parent.Name, Region__c FROM Account ORDER BY Name", headers=page_opts
    )
    out["accounts"] = [dict(r) for r in accounts["records"]]
    out["orders"] = sf.query(
        "SELECT OrderNumber, StatusCode, ActivatedDate, Account.Name, BillToContact.Email, "
        "SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email FROM Order WHERE StatusCode = 'Activated' ORDER BY OrderNumber"
    )["records"]
    out["update"] = sf.Account.update(ACME_ADOPTED, {"Phone": "+1 602 555 0000"})
    out["collection"] = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {
                    "attributes": {"type": "Account"},
                    "id": ACME_ADOPTED,
                    "Stripe_Customer_Id__c": "cus_Adopt000000001",
                },
                {
                    "attributes": {"type": "Account"},
                    "id": "001bad",
                    "Stripe_Customer_Id__c": "cus_x",
                },
            ],
        },
    )
    out["after"] = sf.query(
        f"SELECT Phone, SystemModstamp FROM Account WHERE Id = '{ACME_ADOPTED}'"
    )["records"]
    out["limits"] = sf.limits()["DailyApiRequests"]
    try:
        sf.query("SELECT COUNT() FROM Account")
    except SalesforceError as exc:
        out["refused"] = {"class": type(exc).__name__, "status": exc.status, "content": exc.content}
    out["usage"] = str(sf.api_usage.get("api-usage"))
    return json.loads(json.dumps(out))


def live_run() -> dict[str, Any]:
    with SalesforceSandbox(org_data(), clock_start=CLOCK) as sb:
        return scenario(sb.url)


@contextmanager
def network_blocked() -> Iterator[list[Any]]:
    """Any attempt to open a connection fails (and is remembered) while inside."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"network blocked: {address}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield attempts


def record(library: Path) -> None:
    (library / SESSION_CASSETTE).unlink(missing_ok=True)
    with (
        SalesforceSandbox(org_data(), clock_start=CLOCK) as sb,
        make_vcr(library, "all").use_cassette(SESSION_CASSETTE),
    ):
        scenario(sb.url)


@pytest.mark.skipif(
    not os.environ.get("SANDBOX_RECORD_CASSETTES"),
    reason="set SANDBOX_RECORD_CASSETTES=1 to re-record",
)
def test_record_the_committed_cassette() -> None:
    CASSETTES.mkdir(parents=True, exist_ok=True)
    record(CASSETTES)
    assert (CASSETTES / SESSION_CASSETTE).exists()


def test_the_guard_really_blocks_the_network() -> None:
    with SalesforceSandbox() as sb, network_blocked() as attempts, pytest.raises(OSError):
        loopback_session(sb.url).get(f"{sb.url}/services/data/", timeout=2)
    assert attempts


def test_recording_scrubs_secrets_and_normalises_the_loopback_address(tmp_path: Path) -> None:
    record(tmp_path)
    text = (tmp_path / SESSION_CASSETTE).read_text()

    assert "uri: http://127.0.0.1:0/services/oauth2/token" in text
    assert set(re.findall(r"127\.0\.0\.1:(\d+)", text)) == {"0"}
    for secret in (PASSWORD, SECRET, "00D000000000001!", "sandbox-token"):
        assert secret not in text
    assert not re.search(r"Bearer [A-Za-z0-9]", text)
    assert "authorization" not in text.lower().replace("/services/oauth2/authorize", "")
    assert '\\"access_token\\":\\"REDACTED\\"' in text or '"access_token":"REDACTED"' in text


def replay(library: Path) -> dict[str, Any]:
    """The scenario against the cassette only; the target port is one nothing listens on."""
    with (
        network_blocked() as attempts,
        make_vcr(library, "none").use_cassette(SESSION_CASSETTE) as cassette,
    ):
        replayed = scenario("http://127.0.0.1:9")
    assert attempts == [], f"the replay tried to reach the network: {attempts}"
    assert cassette.all_played
    return replayed


def test_a_fresh_recording_replays_offline_with_the_same_results(tmp_path: Path) -> None:
    record(tmp_path)
    assert replay(tmp_path) == live_run()


def test_the_committed_cassette_replays_offline_with_the_same_results() -> None:
    assert (CASSETTES / SESSION_CASSETTE).exists(), "record it with SANDBOX_RECORD_CASSETTES=1"
    replayed = replay(CASSETTES)

    # What the live sandbox answers today must still be what was recorded.
    assert replayed == live_run()
    assert replayed["update"] == 204
    assert (
        replayed["refused"]["class"] == "SalesforceMalformedRequest"
        and replayed["refused"]["status"] == 400
    )
    assert len(replayed["accounts"]) == 232 and replayed["collection"][1]["success"] is False
    assert replayed["orders"][0]["attributes"]["type"] == "Order"
