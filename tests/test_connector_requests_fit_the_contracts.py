"""Every request the connector sends to Stripe fits Stripe's published description, every answer
it receives does too, and every login method reaches Salesforce through `connect()`.

The connector runs its real paths (create, adopt, update, unset, fetch for preview) against the
sandboxes; the Stripe sandbox logs each exchange, which is then validated with jsonschema
against the shared OpenAPI document (request objects closed, as Stripe refuses unknown keys)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_stripe_contract_schema import _close, operation, typed

from connector.billing import stripe_schema
from connector.config import SalesforceConfig, SecretSource
from connector.engine import RunReport
from connector.errors import AuthenticationError
from connector.salesforce import connect
from connector.sandbox.run import SandboxPair
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.stripe import parse_form

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "stripe-openapi" / "customers.openapi.json"
VENDORED = REPO / "connector" / "billing" / "specs" / "stripe_customers.openapi.json"


def contract() -> dict[str, Any]:
    path = SHARED if SHARED.exists() else VENDORED
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def test_every_stripe_request_and_answer_of_a_sync_fits_the_description(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport]
) -> None:
    sandboxes.stripe.load({"customers": [{"id": "cus_Adopted00000001", "name": "Old"}]})
    sandboxes.salesforce.update("Account", "001000000000A02AAA", {"Stripe_Customer_Id__c": "cus_Adopted00000001"})
    run_sync("backfill")  # creates and an adoption (retrieve + update)
    sandboxes.salesforce.update("Account", "001000000000A01AAA", {"Phone": None, "BillingStreet": None,
                                                                  "Description": "x" * 40})
    run_sync("sync")  # an update that unsets fields

    document = contract()
    strict = json.loads(json.dumps(document))
    for ops in strict["paths"].values():
        for op in ops.values():
            _close(op.get("requestBody"))
    exchanges = list(sandboxes.stripe.exchanges)
    requests_checked = answers_checked = 0
    for e in exchanges:
        op = operation(e["path"])
        assert op is not None, f"the connector called {e['method']} {e['path']}, outside the customer API"
        assert e["method"] in ("GET", "POST"), "the connector never deletes"
        body = json.loads(e["response"]) if e["response"] else None
        problems = stripe_schema.response_problems(op, e["method"], e["status"], body, document)
        assert problems == [], (e["path"], problems)
        answers_checked += 1
        if e["method"] == "POST":
            schema = strict["paths"][op]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
            form = typed(schema, parse_form(parse_qsl(e["body"].decode(), keep_blank_values=True)), strict)
            problems = stripe_schema.schema_problems(stripe_schema.request_schema_ref(op, "post"), form, strict)
            assert problems == [], (e["body"], problems)
            assert e["status"] == 200, e["response"]
            requests_checked += 1
    assert requests_checked == 4 and answers_checked == 5  # 2 creates, adopt (retrieve + update), 1 update
    assert any(b"phone=&" in e["body"] or e["body"].endswith(b"phone=") for e in exchanges if e["method"] == "POST")


def _pem_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture
def org(tmp_path: Path) -> Any:
    private, public = _pem_pair()
    key_file = tmp_path / "server.key"
    key_file.write_bytes(private)
    sf = SalesforceSandbox({"Account": [{"Name": "Login Check"}]}, users={"integration@acme.example": "pw-123456"},
                           consumer_key="3MVGtestkey", consumer_secret="s3cret-consumer", jwt_public_key=public).start()
    yield sf, key_file
    sf.stop()


@pytest.mark.parametrize("auth", ["password", "jwt", "client_credentials", "access_token"])
def test_each_login_method_reaches_the_org_through_connect(org: Any, auth: str) -> None:
    sf, key_file = org
    cfg = SalesforceConfig(auth=auth, instance_url=sf.url, username="integration@acme.example",  # type: ignore[arg-type]
                           consumer_key="3MVGtestkey", domain="acme.my" if auth == "client_credentials" else "login")
    secrets = SecretSource({"SALESFORCE_PASSWORD": "pw-123456", "SALESFORCE_CONSUMER_SECRET": "s3cret-consumer",
                            "SALESFORCE_PRIVATE_KEY_FILE": str(key_file), "SALESFORCE_ACCESS_TOKEN": sf.access_token})

    source = connect(cfg, secrets)
    [page] = list(source.query_pages("SELECT Id, Name FROM Account"))

    assert [r["Name"] for r in page] == ["Login Check"]
    assert source.usage.calls >= 1 and source.usage.limit is not None  # Sforce-Limit-Info was read


def test_a_wrong_password_is_an_authentication_error_naming_the_method(org: Any) -> None:
    sf, _ = org
    cfg = SalesforceConfig(auth="password", instance_url=sf.url, username="integration@acme.example", consumer_key="3MVGtestkey")

    with pytest.raises(AuthenticationError, match="password") as caught:
        connect(cfg, SecretSource({"SALESFORCE_PASSWORD": "wrong-password", "SALESFORCE_CONSUMER_SECRET": "s3cret-consumer"}))
    assert "wrong-password" not in str(caught.value)


def test_the_security_token_is_appended_to_the_password_for_the_oauth_password_flow(org: Any) -> None:
    sf, _ = org
    cfg = SalesforceConfig(auth="password", instance_url=sf.url, username="integration@acme.example", consumer_key="3MVGtestkey")
    # The org knows the password as "pw-123456": Salesforce wants password + security token.
    secrets = SecretSource({"SALESFORCE_PASSWORD": "pw-123", "SALESFORCE_SECURITY_TOKEN": "456",
                            "SALESFORCE_CONSUMER_SECRET": "s3cret-consumer"})

    source = connect(cfg, secrets)

    assert [r["Name"] for r in next(iter(source.query_pages("SELECT Name FROM Account")))] == ["Login Check"]


def test_secrets_can_come_from_files_named_by_NAME_FILE(
    sandboxes: SandboxPair, cli_env: dict[str, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    key_file = tmp_path / "stripe.key"
    key_file.write_text(sandboxes.stripe_key + "\n")  # a trailing newline, as editors leave it
    token_file = tmp_path / "sf.token"
    token_file.write_text(sandboxes.access_token)
    env = {k: v for k, v in cli_env.items() if k not in ("STRIPE_API_KEY", "SALESFORCE_ACCESS_TOKEN")}
    env.update(STRIPE_API_KEY_FILE=str(key_file), SALESFORCE_ACCESS_TOKEN_FILE=str(token_file))

    result = subprocess.run([sys.executable, "-m", "connector", "sync", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    missing = subprocess.run([sys.executable, "-m", "connector", "sync"], capture_output=True, text=True, timeout=120,
                             env={**env, "STRIPE_API_KEY_FILE": str(tmp_path / "nope")})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] == 3
    assert missing.returncode == 2 and "STRIPE_API_KEY_FILE" in missing.stderr
