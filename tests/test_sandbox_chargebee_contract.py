"""Every request the chargebee SDK sends and every answer the Chargebee sandbox gives fit
Chargebee's published description (`shared/chargebee-openapi/`), plus its documented v2 additions.

A scripted session touches each behaviour (writes, replays, paging, filters, entities, and every
kind of error). The sandbox keeps each exchange as it arrived on the wire; each answer is
validated with jsonschema against the schema for its status, each form body against the
operation's request schema made strict, each query and header against what the API takes.
The vendored copy of the description must stay byte-identical to the shared one.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chargebee
import pytest
import requests
from chargebee import Chargebee
from jsonschema import Draft202012Validator

from connector.sandbox.chargebee import ChargebeeSandbox

REPO = Path(__file__).resolve().parents[1]
# The shared contracts sit next to the checkout (../shared), or one level up from a worktree.
SHARED = next(
    (
        p
        for p in (
            d / "shared" / "chargebee-openapi" / "customers.v1.openapi.json"
            for d in (REPO.parent, REPO.parent.parent)
        )
        if p.exists()
    ),
    REPO.parent / "shared" / "chargebee-openapi" / "customers.v1.openapi.json",
)
VENDORED = REPO / "connector" / "billing" / "specs" / "chargebee_customers.v1.openapi.json"
API = "/api/v2"
ENTITY = "chargebee-business-entity-id"
KEY = "chargebee-idempotency-key"

# The v2 additions named in the shared README (from the SDK's typed parameters).
V2_CREATE_PARAMS = {"business_entity_id": {"type": "string", "maxLength": 50}}
# `include_deleted` is in the SDK's typed list parameters (v2), not in the v1 description.
V2_LIST_FILTERS = {"id[is]", "id[in]", "email[is]", "business_entity_id[is]", "include_deleted"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    path = SHARED if SHARED.exists() else VENDORED
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_vendored_description_is_the_shared_one_byte_for_byte() -> None:
    if not SHARED.exists():
        pytest.skip(f"the shared contract {SHARED} is not present in this checkout")
    assert VENDORED.read_bytes() == SHARED.read_bytes()


def operation(method: str, path: str) -> str | None:
    rest = path.removeprefix(API)
    if rest == "/customers":
        return "/customers"
    if re.fullmatch(r"/customers/[^/]+", rest):
        return "/customers/{customer-id}"
    if re.fullmatch(r"/customers/[^/]+/update_billing_info", rest):
        return "/customers/{customer-id}/update_billing_info"
    return None


def _validator(document: dict[str, Any], ref: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": ref, "components": document["components"], "paths": document["paths"]}
    )


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Request objects closed: Chargebee refuses a parameter it does not know; `cf_*` are custom fields."""
    out = copy.deepcopy(schema)
    out["properties"].update(V2_CREATE_PARAMS if "id" in out["properties"] else {})
    out["additionalProperties"] = False
    out["patternProperties"] = {"^cf_": {"type": "string"}}
    for sub in out["properties"].values():
        if sub.get("type") == "object" and "properties" in sub:
            sub["additionalProperties"] = False
    return out


def _typed(schema: dict[str, Any], form: list[tuple[str, str]]) -> dict[str, Any]:
    """The form as the API reads it: nested keys, booleans and integers, meta_data parsed."""
    out: dict[str, Any] = {}
    props = schema["properties"]
    for raw, value in form:
        m = re.fullmatch(r"([^\[\]]+)(?:\[([^\[\]]+)\])?", raw)
        assert m, f"unexpected parameter shape {raw!r}"
        top, sub = m.group(1), m.group(2)
        kind = props.get(top, {}).get("properties", {}).get(sub, {}) if sub else props.get(top, {})
        parsed: Any = value
        if top == "meta_data":
            parsed = json.loads(value)  # must be a JSON object sent as text
            assert isinstance(parsed, dict), "meta_data must be a JSON object"
        elif kind.get("type") == "boolean" and value in ("true", "false"):
            parsed = value == "true"
        elif kind.get("type") == "integer" and value.lstrip("-").isdigit():
            parsed = int(value)
        if sub:
            out.setdefault(top, {})[sub] = parsed
        else:
            out[top] = parsed
    return out


def run_session(sandbox: ChargebeeSandbox) -> None:
    Chargebee.verify_ca_certs = False
    cb = Chargebee("test_contract", **sandbox.sdk_options())

    def attempt(call: Any) -> Any:
        try:
            return call()
        except (chargebee.APIError, Exception):
            return None

    full = {
        "id": "sf-001A",
        "first_name": "Ada",
        "last_name": "Byron",
        "email": "ada@acme.test",
        "phone": "+44 20 7946 0000",
        "company": "Acme Ltd",
        "meta_data": json.dumps({"salesforce_account_id": "001A", "salesforce_org_id": "00D1"}),
        "billing_address": {
            "first_name": "Ada",
            "line1": "1 Main St",
            "line2": "Floor 2",
            "city": "London",
            "state": "Greater London",
            "zip": "N1 9GU",
            "country": "GB",
        },
        "cf_region": "EMEA",
        "auto_collection": "off",
        "allow_direct_debit": True,
    }
    cb.Customer.create(full, headers={KEY: "contract-1", ENTITY: "eu"})  # type: ignore[arg-type]
    cb.Customer.create(full, headers={KEY: "contract-1", ENTITY: "eu"})  # type: ignore[arg-type]  # replayed
    for i in range(4):
        cb.Customer.create({"email": f"batch{i}@acme.test"}, headers={ENTITY: "us"})
    cb.Customer.retrieve("sf-001A")
    cb.Customer.update(
        "sf-001A",
        {
            "company": "Acme Group",
            "phone": "",
            "meta_data": json.dumps({"salesforce_account_id": "001A"}),
        },
        headers={KEY: "contract-2"},
    )
    cb.Customer.update_billing_info(
        "sf-001A",
        {"billing_address": {"line1": "2 High St", "city": "Leeds", "country": "GB"}},
        headers={KEY: "contract-3"},
    )
    page = cb.Customer.list({"limit": 2})
    cb.Customer.list({"limit": 2, "offset": page.next_offset})
    cb.Customer.list({"id": {"is": "sf-001A"}})
    cb.Customer.list({"id": {"in": ["sf-001A", "nobody"]}})
    cb.Customer.list({"email": {"is": "batch1@acme.test"}})
    cb.Customer.list({"business_entity_id": {"is": "us"}}, headers={ENTITY: "us"})
    # errors of each kind
    attempt(lambda: cb.Customer.create({"id": "sf-001A"}))  # duplicate_entry
    attempt(lambda: cb.Customer.create({"company": "c" * 251}))  # too long
    attempt(lambda: cb.Customer.create({"email": "nope"}))  # format
    attempt(lambda: cb.Customer.create({"meta_data": "{oops"}))  # not JSON
    attempt(lambda: cb.Customer.create({"id": "x"}, headers={ENTITY: "nowhere"}))  # unknown entity
    attempt(lambda: cb.Customer.create({"id": "x"}, headers={KEY: "contract-1"}))  # key reused
    attempt(
        lambda: cb.Customer.retrieve("sf-001A", headers={ENTITY: "us"})
    )  # 404: another entity, no sharing
    attempt(lambda: cb.Customer.retrieve("nobody"))  # 404
    attempt(lambda: cb.Customer.list({"limit": 500}))
    attempt(lambda: Chargebee("live_nope", **sandbox.sdk_options()).Customer.list())  # 401
    requests.delete(f"{sandbox.url}{API}/customers", auth=("test_contract", ""), timeout=5)  # 405
    requests.get(
        f"{sandbox.url}{API}/invoices", auth=("test_contract", ""), timeout=5
    )  # 404 unknown URL
    for kind in ("internal_error", "temporary_error", "lock_timeout"):
        requests.post(f"{sandbox.url}/_sandbox/faults", json={"kind": kind, "count": 1}, timeout=5)
        attempt(lambda: cb.Customer.list())
    sandbox.inject_fault(status=500)  # no body given: still Chargebee's shape
    attempt(lambda: cb.Customer.list())
    sandbox.set_rate_limit(0.001)
    attempt(lambda: cb.Customer.list())
    attempt(lambda: cb.Customer.list())  # 429 api_request_limit_exceeded
    sandbox.set_rate_limit(None)


@pytest.fixture(scope="module")
def exchanges() -> Iterator[list[dict[str, Any]]]:
    with ChargebeeSandbox(business_entities=["eu", "us"]) as sandbox:
        run_session(sandbox)
        yield list(sandbox.exchanges)


def test_session_covers_every_kind_of_answer(exchanges: list[dict[str, Any]]) -> None:
    assert {e["status"] for e in exchanges} == {200, 400, 401, 404, 405, 429, 500, 503}
    codes = {(e["response"] or {}).get("api_error_code") for e in exchanges}
    assert {
        "duplicate_entry",
        "param_wrong_value",
        "resource_not_found",
        "api_authentication_failed",
        "http_method_not_supported",
        "api_request_limit_exceeded",
        "lock_timeout",
        "internal_error",
        "internal_temporary_error",
    } <= codes
    assert any(e["replayed"] for e in exchanges)
    assert any("next_offset" in (e["response"] or {}) for e in exchanges)


def test_every_answer_fits_the_description(
    document: dict[str, Any], exchanges: list[dict[str, Any]]
) -> None:
    problems = []
    for e in exchanges:
        op = operation(e["method"], e["path"]) or "/customers"  # unknown URLs answer like any 404
        method = e["method"].lower() if e["method"] in ("GET", "POST") else "get"
        responses = document["paths"][op][method]["responses"]
        assert str(e["status"]) in responses, (
            f"{e['method']} {e['path']}: status {e['status']} is not described"
        )
        ref = _pointer(
            "paths",
            op,
            method,
            "responses",
            str(e["status"]),
            "content",
            "application/json",
            "schema",
        )
        for err in _validator(document, ref).iter_errors(e["response"]):
            problems.append(
                f"{e['method']} {e['path']} {e['status']}: {'/'.join(map(str, err.absolute_path))}: {err.message}"
            )
        if e["status"] >= 400:  # what the SDK and admins read besides the described fields
            assert {"error_code", "http_status_code"} <= set(e["response"]), e
            assert e["response"]["http_status_code"] == e["status"]
    assert problems == []


def test_every_request_body_fits_the_description(
    document: dict[str, Any], exchanges: list[dict[str, Any]]
) -> None:
    problems, checked = [], 0
    for e in exchanges:
        op = operation(e["method"], e["path"])
        if e["method"] != "POST" or op is None:
            continue
        content = document["paths"][op]["post"]["requestBody"]["content"]
        assert e["headers"].get("content-type") == "application/x-www-form-urlencoded"
        schema = _strict(content["application/x-www-form-urlencoded"]["schema"])
        if e["response"] and e["response"].get("api_error_code") in (
            "param_wrong_value",
            "invalid_request",
        ):
            continue  # sent wrong on purpose; the sandbox refused it
        body = _typed(schema, e["form"])
        checked += 1
        for err in Draft202012Validator(schema).iter_errors(body):
            problems.append(
                f"POST {e['path']}: {'/'.join(map(str, err.absolute_path))}: {err.message}"
            )
    assert problems == [] and checked >= 5  # not vacuous: writes of every kind were checked


def test_every_query_and_header_is_one_the_api_takes(
    document: dict[str, Any], exchanges: list[dict[str, Any]]
) -> None:
    described = {
        p["name"]
        for p in document["paths"]["/customers"]["get"]["parameters"]
        if p["in"] == "query"
    }
    for e in exchanges:
        if (
            e["method"] == "GET"
            and operation("GET", e["path"]) == "/customers"
            and e["status"] != 400
        ):
            names = {k for k, _ in e["query"]}
            assert names <= described | V2_LIST_FILTERS, names
        key = e["headers"].get(KEY)
        if key is not None and e["status"] == 200:
            assert 0 < len(key) <= 100
        entity = e["headers"].get(ENTITY)
        if entity is not None:
            assert len(entity) <= 50
