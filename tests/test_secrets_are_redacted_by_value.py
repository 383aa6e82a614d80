"""Secrets are removed by their exact value as well as by shape: every value SecretSource reads
and every session id a login returns is registered with the redactor, and removed also in its
URL-encoded forms. A full debug run whose services echo the token URL-encoded leaves no trace of
it in the output or anywhere in the state store; the shapes the redactor knows cover session ids
with "-", URL-encoded tokens, JWTs and `sk_org_` keys; SecretSource's repr names, never shows."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa
import yaml
from conftest import MAPPINGS

from connector import log as logsetup
from connector.config import SecretSource, load_config
from connector.log import REDACTED, Redactor
from connector.salesforce import connect
from connector.sandbox.run import SANDBOX_ORG_ID, SandboxPair
from connector.sandbox.stripe import api_error_body

INITECH = "001000000000A02AAA"
STRIPE_CREATE = r"^/v1/customers$"
# A Salesforce token whose opaque part holds "-" and "_", as OAuth tokens do.
TOKEN = f"{SANDBOX_ORG_ID[:15]}!AQ-Xy9_kq2-Lm4.Rt7-zW8_pP0-sS1eE5"


def forms(secret: str) -> list[str]:
    """The secret, its URL-encoded forms, and a token's opaque part after the org id and '!'."""
    out = {secret, quote(secret, safe=""), quote_plus(secret)}
    if secret.startswith("00D") and "!" in secret:
        opaque = secret.split("!", 1)[1]
        out |= {opaque, quote(opaque, safe="")}
    return sorted(out)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def everything_stored(db_url: str) -> str:
    """Every value of every row of every table of the state store, as text."""
    engine = sa.create_engine(db_url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(
                repr(tuple(row)) for table in meta.sorted_tables
                for row in conn.execute(sa.select(table))
            )
    finally:
        engine.dispose()


def test_a_debug_run_with_services_echoing_the_token_url_encoded_leaves_it_nowhere(
    sandboxes: SandboxPair, tmp_path: Path, db_url: str
) -> None:
    sandboxes.salesforce.accept_token(TOKEN)
    data = sandboxes.config_dict(state_url=db_url, mappings_dir=str(MAPPINGS))
    data["log"] = {"level": "debug", "format": "json"}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env.update(SALESFORCE_ACCESS_TOKEN=TOKEN, STRIPE_API_KEY=sandboxes.stripe_key,
               BILLING_CONNECTOR_CONFIG=str(cfg))
    # A proxy quoting the forwarded credentials into its error (URL-encoded, as in a query
    # string), and a record failure quoting the session as a form value (quote_plus).
    sandboxes.stripe.inject_fault(
        status=400, method="POST", path=STRIPE_CREATE, count=1,
        body={"error": {"type": "invalid_request_error", "code": "parameter_invalid_string",
                        "message": f"rejected: upstream?auth={quote(TOKEN, safe='')}"}},
    )
    sandboxes.stripe.inject_fault(
        status=500, method="POST", path=STRIPE_CREATE, count=2,
        body=api_error_body(f"forwarded Authorization=Bearer%20{quote(TOKEN, safe='')}"),
    )
    sandboxes.salesforce.fail_record_updates(
        INITECH, "UNABLE_TO_LOCK_ROW", f"row locked by sid={quote_plus(TOKEN)}"
    )

    sync = cli("sync", env=env)
    status = cli("status", env=env)
    status_json = cli("status", "--json", env=env)

    assert sync.returncode == 1, sync.stderr
    output = "".join(r.stdout + r.stderr for r in (sync, status, status_json))
    events = [json.loads(ln) for ln in sync.stderr.splitlines() if ln.startswith("{")]
    assert "sync.record.failed" in {e.get("event") for e in events}
    stored = everything_stored(db_url)
    for secret in (TOKEN, sandboxes.stripe_key):
        for form in forms(secret):
            assert form not in output, f"{form[:8]}... printed"
            assert form not in stored, f"{form[:8]}... stored"
    assert REDACTED in stored  # the echoed token was there, and was removed before storing


def test_values_read_by_secret_source_are_redacted_whatever_their_shape(tmp_path: Path) -> None:
    # A password has no shape a pattern could know; it is redacted because it was read.
    password = "correct-Horse/battery+staple!42"
    secret_file = tmp_path / "password"
    secret_file.write_text(password + "\n")
    source = SecretSource({"SALESFORCE_PASSWORD_FILE": str(secret_file)})
    out = io.StringIO()
    logsetup.configure(level="debug", fmt="json", stream=out)

    assert source.get("SALESFORCE_PASSWORD") == password
    logsetup.get_logger("test").warning(
        "login.retry", url=f"https://login.example/?pw={quote(password, safe='')}",
        form=f"password={quote_plus(password)}", note=f"tried {password}",
    )

    text = out.getvalue()
    for form in forms(password):
        assert form not in text
    assert text.count(REDACTED) == 3


def test_the_session_id_a_password_login_returns_is_registered_for_redaction(
    sandboxes: SandboxPair, tmp_path: Path
) -> None:
    user, password, consumer_secret = "integration@acme.example", "Pa55-w0rd-7c1d9e", "cs-4b8a2f61"
    sandboxes.salesforce.users = {user: password}
    sandboxes.salesforce.consumer_secret = consumer_secret
    data = sandboxes.config_dict()
    data["salesforce"].update(auth="password", username=user,
                              consumer_key=sandboxes.salesforce.consumer_key)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    secrets = SecretSource({"SALESFORCE_PASSWORD": password,
                            "SALESFORCE_CONSUMER_SECRET": consumer_secret})

    source = connect(load_config(cfg).salesforce, secrets)
    session = source.sf.session_id
    # Neither of the URL-encoded forms has the "!" the token shape looks for.
    text = logsetup.REDACTOR.scrub(f"a={quote(session, safe='')} b={quote_plus(session)} c={session}")

    assert session and session not in sandboxes.salesforce.access_token
    for form in forms(session):
        assert form not in text


@pytest.mark.parametrize(
    "secret",
    [
        TOKEN,  # a session id whose opaque part holds "-"
        quote(TOKEN, safe=""),  # and URL-encoded ("!" is %21)
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIzTVZHOSIsInN1YiI6ImFAYi5jIn0.c2lnbmF0dXJlLXBhcnQ_xyz",
        "sk_org_live_51Hx0aBcDeFgHiJkLmNoPqRsT",
        "sk_org_test_51Hx0aBcDeFgHiJkLmNoPqRsT",
    ],
    ids=["session-with-dash", "url-encoded-token", "jwt-assertion", "sk-org-live", "sk-org-test"],
)
def test_secret_shapes_are_redacted_even_when_never_registered(secret: str) -> None:
    text = Redactor().scrub(f"POST /token assertion={secret}&x=1 and again: {secret}.")

    assert secret not in text
    assert text.count(REDACTED) == 2
    for part in secret.replace("%21", "!").split("!")[-1].split("-"):
        if len(part) >= 8:
            assert part not in text


def test_secret_source_repr_names_the_secrets_and_shows_no_value(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk_test_keyfromfile000000000")
    source = SecretSource({
        "STRIPE_API_KEY": "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "SALESFORCE_ACCESS_TOKEN": TOKEN,
        "EU_STRIPE_API_KEY_FILE": str(key_file),
        "HOME": "/home/billing-connector-home",
    })

    shown = repr(source)
    printed = f"{source}"

    for text in (shown, printed):
        assert "STRIPE_API_KEY" in text and "SALESFORCE_ACCESS_TOKEN" in text
        for value in ("4eC39HqLyjWDarjtT1zdp7dc", TOKEN[16:], str(key_file), "billing-connector-home"):
            assert value not in text
