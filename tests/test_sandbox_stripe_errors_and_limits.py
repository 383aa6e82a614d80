"""Authentication, rate limits, lock timeouts, server errors and headers, as Stripe answers them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import requests
import stripe

from connector.sandbox.stripe import StripeSandbox

AUTH = {"Authorization": "Bearer sk_test_errors"}


@pytest.fixture(scope="module")
def server() -> Iterator[StripeSandbox]:
    with StripeSandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(server: StripeSandbox) -> Iterator[StripeSandbox]:
    server.reset()
    server.clear_faults()
    server.set_rate_limit(None)
    server.api_keys = None
    yield server
    server.clear_faults()
    server.set_rate_limit(None)
    server.api_keys = None


def make_client(sandbox: StripeSandbox, key: str = "sk_test_errors", retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": sandbox.url}, max_network_retries=retries)


# --- authentication ----------------------------------------------------------------------------


def test_missing_key_is_refused_with_401(sandbox: StripeSandbox) -> None:
    resp = requests.get(f"{sandbox.url}/v1/customers", timeout=5)
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"  # what Stripe sends; its type enum has no authentication_error
    assert error["message"].startswith("You did not provide an API key.")


@pytest.mark.parametrize("key", ["sk_live_0123456789abcdef", "pk_test_0123456789abcdef", "nonsense"])
def test_key_that_is_not_a_test_secret_is_refused(sandbox: StripeSandbox, key: str) -> None:
    with pytest.raises(stripe.AuthenticationError) as err:
        make_client(sandbox, key).v1.customers.list()
    assert err.value.http_status == 401
    assert err.value.json_body is not None
    message = err.value.json_body["error"]["message"]
    assert message.startswith("Invalid API Key provided:") and key not in message  # masked


@pytest.mark.parametrize("key", ["sk_test_anything", "rk_test_restricted"])
def test_test_mode_secret_and_restricted_keys_are_accepted(sandbox: StripeSandbox, key: str) -> None:
    assert make_client(sandbox, key).v1.customers.list().data == []


def test_basic_auth_is_accepted_like_curl_u(sandbox: StripeSandbox) -> None:
    assert requests.get(f"{sandbox.url}/v1/customers", auth=("sk_test_curl", ""), timeout=5).status_code == 200


def test_configured_keys_are_the_only_ones_accepted(sandbox: StripeSandbox) -> None:
    sandbox.api_keys = frozenset({"sk_test_only"})
    assert make_client(sandbox, "sk_test_only").v1.customers.list().data == []
    with pytest.raises(stripe.AuthenticationError):
        make_client(sandbox, "sk_test_other").v1.customers.list()


def test_constructor_takes_the_accepted_keys() -> None:
    with StripeSandbox(api_keys=["rk_test_connector"]) as sb:
        assert make_client(sb, "rk_test_connector").v1.customers.list().data == []
        with pytest.raises(stripe.AuthenticationError):
            make_client(sb, "sk_test_x").v1.customers.list()


# --- rate limits and lock timeouts ------------------------------------------------------------------


def test_over_the_rate_limit_answers_429_rate_limit(sandbox: StripeSandbox) -> None:
    sandbox.set_rate_limit(0.5)
    client = make_client(sandbox)
    client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as err:
        client.v1.customers.list()
    assert err.value.http_status == 429
    assert err.value.json_body is not None
    assert err.value.json_body["error"]["code"] == "rate_limit"
    assert err.value.json_body["error"]["type"] == "invalid_request_error"
    assert err.value.request_id and err.value.request_id.startswith("req_")
    assert sandbox.stats()["rate_limited"] == 1


def test_stripe_python_does_not_retry_a_rate_limit_by_itself(sandbox: StripeSandbox) -> None:
    sandbox.set_rate_limit(0.5)
    client = make_client(sandbox, retries=2)
    client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list()
    assert sandbox.stats()["requests"]["GET /v1/customers"] == 2


def test_lock_timeout_is_a_429_that_stripe_python_retries(sandbox: StripeSandbox) -> None:
    sandbox.inject_lock_timeout(method="POST")
    with pytest.raises(stripe.RateLimitError) as err:
        make_client(sandbox).v1.customers.create(params={"name": "A"})
    assert err.value.http_status == 429
    assert err.value.json_body is not None and err.value.json_body["error"]["code"] == "lock_timeout"
    assert (err.value.headers or {}).get("Stripe-Should-Retry") == "true"
    assert sandbox.customers() == []
    sandbox.inject_lock_timeout(method="POST")
    cus = make_client(sandbox, retries=1).v1.customers.create(params={"name": "A"})
    assert [c["id"] for c in sandbox.customers()] == [cus.id]


def test_lock_timeout_through_the_control_api(sandbox: StripeSandbox) -> None:
    requests.post(f"{sandbox.url}/_sandbox/faults", json={"kind": "lock_timeout", "method": "GET"}, timeout=5)
    resp = requests.get(f"{sandbox.url}/v1/customers", headers=AUTH, timeout=5)
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "lock_timeout"
    assert requests.get(f"{sandbox.url}/v1/customers", headers=AUTH, timeout=5).status_code == 200


def test_stripe_should_retry_false_stops_client_retries(sandbox: StripeSandbox) -> None:
    sandbox.inject_fault(status=500, headers={"Stripe-Should-Retry": "false"}, count=3, method="GET")
    with pytest.raises(stripe.APIError):
        make_client(sandbox, retries=2).v1.customers.list()
    assert sandbox.stats()["requests"]["GET /v1/customers"] == 1


def test_500_is_retried_with_the_same_idempotency_key(sandbox: StripeSandbox) -> None:
    sandbox.inject_fault(status=500, count=1, method="POST")
    cus = make_client(sandbox, retries=1).v1.customers.create(params={"name": "A"})
    assert [c["id"] for c in sandbox.customers()] == [cus.id]
    posts = [e for e in sandbox.exchanges if e["method"] == "POST"]
    assert [e["status"] for e in posts] == [500, 200]


# --- the token bucket ---------------------------------------------------------------------------


def test_the_cap_lets_through_burst_plus_rate_times_elapsed(sandbox: StripeSandbox) -> None:
    """Counted on a clock the test moves: 200 requests over 1.5 s of hand-moved time at a cap of 40, burst 5."""
    now = [500.0]
    sandbox.clock = lambda: now[0]
    try:
        sandbox.set_rate_limit(40.0, burst=5)
        statuses = []
        for _ in range(200):
            now[0] += 0.0075
            statuses.append(requests.get(f"{sandbox.url}/v1/customers", headers=AUTH, timeout=5).status_code)
    finally:
        sandbox.clock = time.monotonic
    ok = statuses.count(200)
    assert 64 <= ok <= 65  # five burst tokens plus 40 a second for 1.5 s
    assert statuses.count(429) == 200 - ok


def test_burst_lets_that_many_through_at_once(sandbox: StripeSandbox) -> None:
    sandbox.set_rate_limit(1.0, burst=5)
    statuses = [requests.get(f"{sandbox.url}/v1/customers", headers=AUTH, timeout=5).status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]


def test_rate_limit_through_the_control_api(sandbox: StripeSandbox) -> None:
    requests.post(f"{sandbox.url}/_sandbox/rate_limit", json={"per_second": 0.5}, timeout=5)
    statuses = [requests.get(f"{sandbox.url}/v1/customers", headers=AUTH, timeout=5).status_code for _ in range(2)]
    assert statuses == [200, 429]


# --- other errors and headers ----------------------------------------------------------------------


def test_unknown_customer_is_resource_missing(sandbox: StripeSandbox) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        make_client(sandbox).v1.customers.retrieve("cus_00000000000000")
    assert err.value.http_status == 404
    assert err.value.json_body == {"error": {
        "code": "resource_missing", "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "message": "No such customer: 'cus_00000000000000'", "param": "id", "type": "invalid_request_error",
    }}


def test_unknown_url_and_wrong_method(sandbox: StripeSandbox) -> None:
    missing = requests.get(f"{sandbox.url}/v1/charges", headers=AUTH, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert "Unrecognized request URL" in missing.json()["error"]["message"]
    wrong = requests.put(f"{sandbox.url}/v1/customers", headers=AUTH, timeout=5)
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"


def test_injected_500_without_body_answers_api_error(sandbox: StripeSandbox) -> None:
    sandbox.inject_fault(status=503, method="GET")
    resp = requests.get(f"{sandbox.url}/v1/customers", headers=AUTH, timeout=5)
    assert resp.status_code == 503 and resp.json()["error"]["type"] == "api_error"


def test_every_answer_carries_a_request_id_and_the_version(sandbox: StripeSandbox) -> None:
    sandbox.set_rate_limit(0.5)
    answers = [
        requests.get(f"{sandbox.url}/v1/customers", headers={**AUTH, "Stripe-Version": "2024-06-20"}, timeout=5),
        requests.get(f"{sandbox.url}/v1/customers", headers={**AUTH, "Stripe-Version": "2024-06-20"}, timeout=5),  # 429
        requests.get(f"{sandbox.url}/v1/customers", timeout=5),  # 401 (rate-limited too: the bucket comes first)
    ]
    sandbox.set_rate_limit(None)
    answers.append(requests.get(f"{sandbox.url}/v1/nope", headers=AUTH, timeout=5))
    for resp in answers:
        assert re.fullmatch(r"req_[A-Za-z0-9]{14}", resp.headers["Request-Id"])
        assert resp.headers["Stripe-Version"]
    assert answers[0].headers["Stripe-Version"] == "2024-06-20"
    assert len({r.headers["Request-Id"] for r in answers}) == len(answers)


def test_stripe_client_version_is_echoed(sandbox: StripeSandbox) -> None:
    page = make_client(sandbox).v1.customers.list()
    assert page.last_response is not None
    assert page.last_response.headers["Stripe-Version"] == stripe.api_version


def test_deletes_are_counted(sandbox: StripeSandbox) -> None:
    client = make_client(sandbox)
    cus = client.v1.customers.create(params={"name": "A"})
    client.v1.customers.delete(cus.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.delete(cus.id)
    stats = sandbox.stats()
    assert stats["deletes"] == 2 and stats["operations"]["delete"] == 2
    assert stats["requests"][f"DELETE /v1/customers/{cus.id}"] == 2
