"""Every answer the Stripe sandbox gives, and every body the client sends, fits Stripe's description.

A scripted StripeClient session touches each behaviour (writes, unsets, paging, search, every
kind of error, a deleted customer). A recording HTTP client keeps each exchange; each answer is
validated with jsonschema against the response schema of the shared OpenAPI document, each
request against the request schema. The vendored copy must stay byte-identical to the shared one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import stripe

from connector.billing import stripe_schema
from connector.sandbox.stripe import StripeSandbox, parse_form

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "stripe-openapi" / "customers.openapi.json"
VENDORED = REPO / "connector" / "billing" / "specs" / "stripe_customers.openapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # The shared contract when this checkout sits next to it; else the vendored copy, which the
    # byte-identity test below keeps equal to it.
    path = SHARED if SHARED.exists() else VENDORED
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for child in node.values():
            _close(child)
    elif isinstance(node, list):
        for child in node:
            _close(child)


@pytest.fixture(scope="module")
def request_document(document: dict[str, Any]) -> dict[str, Any]:
    """The description with its request side made strict, plus the query parameters as schemas.

    Stripe refuses `address[street]` ("Received unknown parameter"), but the description
    leaves nested request objects open; closing them states what the API does. Query
    parameters become one object schema per operation under components/schemas/query:<path>.
    """
    doc = copy.deepcopy(document)
    for ops in doc["paths"].values():
        for op in ops.values():
            _close(op.get("requestBody"))
    for path, ops in document["paths"].items():
        if "get" in ops:
            params = [p for p in ops["get"].get("parameters", []) if p["in"] == "query"]
            doc["components"]["schemas"][f"query:{path}"] = {
                "type": "object", "additionalProperties": False,
                "properties": {p["name"]: p["schema"] for p in params},
                "required": [p["name"] for p in params if p.get("required")],
            }
    return doc


def test_vendored_description_is_the_shared_one_byte_for_byte() -> None:
    if not SHARED.exists():
        pytest.skip(f"the shared contract {SHARED} is not present in this checkout")
    assert VENDORED.read_bytes() == SHARED.read_bytes()


class RecordingClient(stripe.RequestsClient):
    """stripe-python's own HTTP client, keeping what went out and what came back."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[dict[str, Any]] = []

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None) -> Any:
        content, status, rheaders = super().request(method, url, headers, post_data)
        self.exchanges.append({
            "method": method.upper(), "url": url, "body": post_data, "status": status,
            "response": json.loads(content) if content else None, "headers": dict(rheaders),
        })
        return content, status, rheaders


def operation(path: str) -> str | None:
    if path == "/v1/customers":
        return "/v1/customers"
    if path == "/v1/customers/search":
        return "/v1/customers/search"
    if path.startswith("/v1/customers/") and path.count("/") == 3:
        return "/v1/customers/{customer}"
    return None


def run_session(sandbox: StripeSandbox, recorder: RecordingClient) -> None:
    """One pass over everything the sandbox answers; failures are expected and swallowed."""
    client = stripe.StripeClient("sk_test_contract", base_addresses={"api": sandbox.url}, max_network_retries=0, http_client=recorder)

    def attempt(call: Any) -> Any:
        try:
            return call()
        except stripe.StripeError:
            return None

    full = client.v1.customers.create(params={
        "name": "Acme GmbH", "email": "billing@acme.test", "phone": "+4930123456", "description": "Key account",
        "address": {"line1": "Hauptstr. 1", "line2": "", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "shipping": {"name": "Acme Lager", "phone": "+49301", "address": {"line1": "Lager 5", "city": "Potsdam", "country": "DE"}},
        "metadata": {"sf_account_id": "001A", "sf_order_id": "801A"},
        "preferred_locales": ["de", "en"], "tax_exempt": "reverse", "balance": 0, "invoice_prefix": "ACME",
        "invoice_settings": {"footer": "Danke", "custom_fields": [{"name": "PO", "value": "4711"}]},
        "expand": ["tax"],
    }, options={"idempotency_key": "contract-create-1"})
    client.v1.customers.create(params={"name": "Acme GmbH", "email": "billing@acme.test", "phone": "+4930123456",
        "description": "Key account",
        "address": {"line1": "Hauptstr. 1", "line2": "", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "shipping": {"name": "Acme Lager", "phone": "+49301", "address": {"line1": "Lager 5", "city": "Potsdam", "country": "DE"}},
        "metadata": {"sf_account_id": "001A", "sf_order_id": "801A"},
        "preferred_locales": ["de", "en"], "tax_exempt": "reverse", "balance": 0, "invoice_prefix": "ACME",
        "invoice_settings": {"footer": "Danke", "custom_fields": [{"name": "PO", "value": "4711"}]},
        "expand": ["tax"],
    }, options={"idempotency_key": "contract-create-1"})  # replayed
    bare = client.v1.customers.create()
    others = [client.v1.customers.create(params={"name": f"Batch {i}", "metadata": {"batch": "b1"}}) for i in range(4)]
    client.v1.customers.retrieve(full.id)
    client.v1.customers.update(full.id, params={"metadata": {"sf_order_id": "", "tier": "gold"}, "name": "Acme AG"})
    client.v1.customers.update(full.id, params={"address": "", "shipping": "", "phone": "", "tax_exempt": "",
        "invoice_settings": {"custom_fields": "", "footer": ""}})
    client.v1.customers.update(full.id, params={"metadata": ""})
    page = client.v1.customers.list(params={"limit": 2})
    client.v1.customers.list(params={"limit": 2, "starting_after": page.data[-1].id})
    client.v1.customers.list(params={"limit": 2, "ending_before": others[0].id})
    client.v1.customers.list(params={"email": "billing@acme.test", "created": {"gte": 0}})
    first = client.v1.customers.search(params={"query": "metadata['batch']:'b1'", "limit": 3, "expand": ["total_count"]})
    client.v1.customers.search(params={"query": "metadata['batch']:'b1'", "limit": 3, "page": first.next_page})
    client.v1.customers.search(params={"query": "name~'Batch' OR email:'billing@acme.test'"})
    client.v1.customers.delete(bare.id)
    client.v1.customers.retrieve(bare.id)  # the deleted stub
    # errors of each kind
    attempt(lambda: client.v1.customers.update(bare.id, params={"name": "back"}))  # 404 deleted
    attempt(lambda: client.v1.customers.retrieve("cus_00000000000000"))  # 404 resource_missing
    attempt(lambda: client.v1.customers.create(params={"nickname": "x"}))  # parameter_unknown
    attempt(lambda: client.v1.customers.create(params={"address": {"street": "x"}}))  # nested unknown
    attempt(lambda: client.v1.customers.create(params={"name": "n" * 257}))  # too long
    attempt(lambda: client.v1.customers.create(params={"tax_exempt": "sometimes"}))  # enum
    attempt(lambda: client.v1.customers.create(params={"shipping": {"address": {"line1": "x"}}}))  # parameter_missing
    attempt(lambda: client.v1.customers.create(params={"balance": "ten"}))  # parameter_invalid_integer
    attempt(lambda: client.v1.customers.create(params={"metadata": {"k": "v" * 501}}))  # metadata value
    attempt(lambda: client.v1.customers.create(params={"metadata": {f"k{i}": "v" for i in range(51)}}))  # 51 keys
    attempt(lambda: client.v1.customers.create(params={"coupon": "NOPE"}))  # unknown object
    attempt(lambda: client.v1.customers.list(params={"limit": 101}))
    attempt(lambda: client.v1.customers.list(params={"starting_after": "cus_00000000000000"}))
    attempt(lambda: client.v1.customers.search(params={"query": "name:'unterminated"}))
    attempt(lambda: client.v1.customers.search(params={"query": "nickname:'x'"}))
    attempt(lambda: client.v1.customers.create(params={"name": "Other"}, options={"idempotency_key": "contract-create-1"}))
    attempt(lambda: client.v1.customers.update(full.id, params={"name": "x"}, options={"idempotency_key": "contract-create-1"}))
    attempt(lambda: client.v1.customers.create(params={"name": "long key"}, options={"idempotency_key": "k" * 256}))
    attempt(lambda: client.raw_request("get", "/v1/charges"))  # unknown URL
    attempt(lambda: client.raw_request("delete", "/v1/customers"))  # 405
    bad_key = stripe.StripeClient("sk_live_contract", base_addresses={"api": sandbox.url}, max_network_retries=0, http_client=recorder)
    attempt(lambda: bad_key.v1.customers.list())  # 401
    sandbox.inject_fault(status=500, count=1)
    attempt(lambda: client.v1.customers.list())  # 500 api_error
    sandbox.inject_lock_timeout(count=1)
    attempt(lambda: client.v1.customers.retrieve(full.id))  # 429 lock_timeout
    sandbox.set_rate_limit(0.2)
    attempt(lambda: client.v1.customers.list())
    attempt(lambda: client.v1.customers.list())  # 429 rate_limit
    sandbox.set_rate_limit(None)


@pytest.fixture(scope="module")
def session() -> Iterator[tuple[StripeSandbox, RecordingClient]]:
    with StripeSandbox() as sandbox:
        recorder = RecordingClient()
        run_session(sandbox, recorder)
        yield sandbox, recorder


def test_session_covers_every_kind_of_answer(session: tuple[StripeSandbox, RecordingClient]) -> None:
    _, recorder = session
    statuses = {e["status"] for e in recorder.exchanges}
    assert statuses == {200, 400, 401, 404, 405, 429, 500}
    objects = {(e["response"] or {}).get("object") for e in recorder.exchanges}
    assert {"customer", "list", "search_result"} <= objects
    assert any((e["response"] or {}).get("deleted") for e in recorder.exchanges)
    codes = {(e["response"] or {}).get("error", {}).get("code") for e in recorder.exchanges}
    assert {"parameter_unknown", "parameter_missing", "parameter_invalid_integer", "resource_missing", "rate_limit", "lock_timeout"} <= codes
    types = {(e["response"] or {}).get("error", {}).get("type") for e in recorder.exchanges}
    assert {"invalid_request_error", "idempotency_error", "api_error"} <= types
    assert any(e["headers"].get("Idempotent-Replayed") == "true" for e in recorder.exchanges)


def test_the_client_saw_every_answer_the_sandbox_gave(session: tuple[StripeSandbox, RecordingClient]) -> None:
    sandbox, recorder = session
    assert [(e["method"], e["status"]) for e in sandbox.exchanges] == [(e["method"], e["status"]) for e in recorder.exchanges]


def test_every_answer_validates_against_the_response_schemas(
    session: tuple[StripeSandbox, RecordingClient], document: dict[str, Any]
) -> None:
    _, recorder = session
    failures = []
    for e in recorder.exchanges:
        path = urlsplit(e["url"]).path
        op = operation(path)
        method = e["method"].lower()
        if op is not None and method in document["paths"][op]:
            problems = stripe_schema.response_problems(op, method, e["status"], e["response"], document)
        else:  # no operation there (unknown URL, wrong method): Stripe's generic error
            problems = stripe_schema.schema_problems("#/components/schemas/error", e["response"], document)
        if problems:
            failures.append((e["method"], path, e["status"], problems[:3]))
    assert failures == []
    assert len(recorder.exchanges) > 40


def test_the_schema_check_can_fail(document: dict[str, Any]) -> None:
    # the validator must notice a wrong answer, or the test above proves nothing
    assert stripe_schema.response_problems("/v1/customers", "post", 200, {"id": "cus_x", "object": "customer"}, document)
    assert stripe_schema.response_problems("/v1/customers", "post", 401, {"error": {"type": "authentication_error"}}, document)
    assert stripe_schema.response_problems("/v1/customers", "get", 200, {"object": "list", "data": [], "has_more": False, "url": "/v2/x"}, document)


# --- requests ---------------------------------------------------------------------------------


def _resolve(node: Any, document: Mapping[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def typed(node: Any, value: Any, document: Mapping[str, Any]) -> Any:
    """Turn decoded form strings into JSON types where the schema asks (ints, arrays), nothing else."""
    node = _resolve(node, document)
    for alt in node.get("anyOf", []):
        alt = _resolve(alt, document)
        if isinstance(value, dict) and alt.get("type") in ("object", "array"):
            return typed(alt, value, document)
        if alt.get("type") == "integer" and isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    kind = node.get("type")
    if kind == "integer" and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if kind == "array" and isinstance(value, dict) and all(k.isdigit() for k in value):
        return [typed(node.get("items", {}), value[k], document) for k in sorted(value, key=int)]
    if kind == "array" and isinstance(value, list):
        return [typed(node.get("items", {}), v, document) for v in value]
    if kind == "object" and isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        return {
            k: typed(props[k] if k in props else extra if isinstance(extra, dict) else {}, v, document)
            for k, v in value.items()
        }
    return value


# Refusals the description itself explains; the others (metadata limits, ids of objects the
# account does not hold, idempotency, invoice prefix) are rules the description cannot state.
SCHEMA_REFUSALS = ("parameter_unknown", "parameter_missing", "parameter_invalid_integer")


def test_every_request_body_is_checked_against_the_request_schema(
    session: tuple[StripeSandbox, RecordingClient], request_document: dict[str, Any]
) -> None:
    _, recorder = session
    checked = refusals = 0
    for e in recorder.exchanges:
        path = urlsplit(e["url"]).path
        op = operation(path)
        if e["method"] != "POST" or op is None:
            continue
        schema = request_document["paths"][op]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        body = typed(schema, parse_form(parse_qsl(e["body"] or "", keep_blank_values=True)), request_document)
        problems = stripe_schema.schema_problems(stripe_schema.request_schema_ref(op, "post"), body, request_document)
        error = (e["response"] or {}).get("error", {})
        if e["status"] == 200:
            assert problems == [], (e["body"], problems)
        elif error.get("code") in SCHEMA_REFUSALS or error.get("message", "").startswith(("Invalid string", "Invalid tax_exempt")):
            assert problems, f"the sandbox refused {e['body']!r} ({error}) but the request schema accepts it"
            refusals += 1
        checked += 1
    assert checked >= 20 and refusals >= 6


def test_every_query_is_checked_against_the_query_parameters(
    session: tuple[StripeSandbox, RecordingClient], request_document: dict[str, Any]
) -> None:
    _, recorder = session
    checked = 0
    for e in recorder.exchanges:
        split = urlsplit(e["url"])
        op = operation(split.path)
        if e["method"] != "GET" or op is None or e["status"] != 200:
            continue
        ref = f"#/components/schemas/query:{op.replace('~', '~0').replace('/', '~1')}"
        schema = request_document["components"]["schemas"][f"query:{op}"]
        query = typed(schema, parse_form(parse_qsl(split.query, keep_blank_values=True)), request_document)
        assert stripe_schema.schema_problems(ref, query, request_document) == [], e["url"]
        checked += 1
    assert checked >= 8
    bad = {"limit": 5, "name": "x"}
    assert stripe_schema.schema_problems("#/components/schemas/query:~1v1~1customers", bad, request_document)


def test_the_recorded_headers_are_stripes(session: tuple[StripeSandbox, RecordingClient]) -> None:
    _, recorder = session
    for e in recorder.exchanges:
        assert e["headers"]["Request-Id"].startswith("req_")
        assert e["headers"]["Stripe-Version"] == stripe.api_version


def test_raw_form_and_client_agree(session: tuple[StripeSandbox, RecordingClient]) -> None:
    # what stripe-python sends for nested params is what the sandbox parses
    _, recorder = session
    first = recorder.exchanges[0]
    assert "address[line1]=Hauptstr.+1" in first["body"] and "metadata[sf_account_id]=001A" in first["body"]
    assert "preferred_locales[0]=de" in first["body"] and "expand[0]=tax" in first["body"]
    assert requests.utils.unquote(first["body"]).count("invoice_settings[custom_fields][0][name]=PO") == 1
