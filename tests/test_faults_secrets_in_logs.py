"""No secret reaches a log line or the terminal: a full run of the real command (backfill, then
sync) at log level debug with JSON logs, with Stripe and Salesforce echoing the credentials back
in error messages, has its whole stdout and stderr searched for every secret it used; and an
exception whose message holds a key is redacted inside the logged traceback."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import MAPPINGS
from fault_readback import SF_QUERY, STRIPE_CREATE, cli, sf_errors

from connector import log as logsetup
from connector.config import SecretSource
from connector.log import REDACTED
from connector.sandbox.run import SandboxPair
from connector.sandbox.stripe import api_error_body

INITECH = "001000000000A02AAA"
ACME = "001000000000A01AAA"


def command_env(
    sandboxes: SandboxPair, tmp_path: Path, auth: str
) -> tuple[dict[str, str], list[str]]:
    """A config file with debug JSON logs, and the environment; returns the secrets in play."""
    sf = sandboxes.salesforce
    data = sandboxes.config_dict(
        state_url=f"sqlite:///{tmp_path / 'state.db'}", mappings_dir=str(MAPPINGS)
    )
    data["log"] = {"level": "debug", "format": "json"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env["STRIPE_API_KEY"] = sandboxes.stripe_key
    if auth == "access_token":
        env["SALESFORCE_ACCESS_TOKEN"] = sandboxes.access_token
    else:
        user, password, secret = (
            "integration@acme.example",
            "Pa55-w0rd-7c1d9e",
            "consumer-secret-4b8a2f61",
        )
        sf.users = {user: password + "SecTok9d8c7b"}  # Salesforce wants the security token appended
        sf.consumer_secret = secret
        data["salesforce"].update(auth="password", username=user, consumer_key=sf.consumer_key)
        env.update(
            SALESFORCE_PASSWORD=password,
            SALESFORCE_SECURITY_TOKEN="SecTok9d8c7b",
            SALESFORCE_CONSUMER_SECRET=secret,
        )
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    env["BILLING_CONNECTOR_CONFIG"] = str(cfg)
    secrets = [v for k, v in env.items() if k.startswith(("SALESFORCE_", "STRIPE_"))]
    return env, secrets


def pieces(secret: str) -> list[str]:
    """The secret and its distinctive parts (a token's opaque part after the org id and '!')."""
    out = [secret]
    if "!" in secret:
        out.append(secret.split("!", 1)[1])
    return out


@pytest.mark.parametrize("auth", ["access_token", "password"])
def test_a_full_debug_run_never_prints_a_secret(
    sandboxes: SandboxPair, tmp_path: Path, auth: str
) -> None:
    env, secrets = command_env(sandboxes, tmp_path, auth)
    # The services echo credentials back in error messages, as misconfigured proxies and some
    # APIs do: the connector logs those messages, so the redactor has real work to do.
    sandboxes.stripe.inject_fault(
        status=500,
        method="POST",
        path=STRIPE_CREATE,
        count=3,
        body_contains=ACME,  # aimed at one record: the creates go out concurrently
        body=api_error_body(f"upstream rejected Authorization: Bearer {sandboxes.stripe_key}"),
    )
    echo = sandboxes.access_token if auth == "access_token" else env["SALESFORCE_CONSUMER_SECRET"]
    sandboxes.salesforce.fail_record_updates(
        INITECH, "UNABLE_TO_LOCK_ROW", f"row locked by session {echo}"
    )

    backfill = cli("backfill", env=env)
    sync = cli("sync", "--json", env=env)

    assert backfill.returncode == 1, (
        backfill.stderr
    )  # the echoing failures are reported, not hidden
    assert sync.returncode in (0, 1), sync.stderr
    output = backfill.stdout + backfill.stderr + sync.stdout + sync.stderr
    lines = [ln for ln in (backfill.stderr + sync.stderr).splitlines() if ln.startswith("{")]
    events = [json.loads(ln) for ln in lines]
    assert {"run.started", "run.finished", "sync.record.failed"} <= {e.get("event") for e in events}
    issued = list(sandboxes.salesforce._tokens) if auth == "password" else []
    for secret in [*secrets, *issued]:
        for piece in pieces(secret):
            assert piece not in output, f"secret {piece[:4]}... printed"
    assert REDACTED in output  # the echoed credentials were there, and were removed


def test_a_logged_traceback_with_a_key_in_its_message_is_redacted(sandboxes: SandboxPair) -> None:
    secrets = SecretSource(
        {"STRIPE_API_KEY": sandboxes.stripe_key, "SALESFORCE_ACCESS_TOKEN": sandboxes.access_token}
    )
    out = io.StringIO()
    logsetup.configure(level="debug", fmt="json", stream=out, secrets=secrets.all_values())
    log = logsetup.get_logger("test.faults")

    def connect(key: str) -> None:
        raise RuntimeError(f"could not use {key} against {sandboxes.stripe.url}")

    try:
        connect(sandboxes.stripe_key)
    except RuntimeError:
        log.exception(
            "billing.connect_failed", headers={"Authorization": f"Bearer {sandboxes.access_token}"}
        )
    try:
        # A live key this process was never given is removed by its shape.
        raise ValueError("leaked sk_live_51Hx0000000000000000000000")
    except ValueError as exc:
        log.error("other.failure", error=exc, exc_info=True)

    text = out.getvalue()
    events = [json.loads(ln) for ln in text.splitlines()]
    assert [e["event"] for e in events] == ["billing.connect_failed", "other.failure"]
    assert "Traceback" in events[0]["exception"] and "RuntimeError" in events[0]["exception"]
    for secret in (
        sandboxes.stripe_key,
        sandboxes.access_token,
        "sk_live_51Hx0000000000000000000000",
    ):
        for piece in pieces(secret):
            assert piece not in text
    assert REDACTED in events[0]["exception"] and REDACTED in events[1]["exception"]


def test_error_messages_the_command_prints_or_stores_are_redacted(
    sandboxes: SandboxPair, tmp_path: Path
) -> None:
    env, secrets = command_env(sandboxes, tmp_path, "access_token")
    # A record failure whose message echoes the Stripe key (kept in the store, shown by
    # `status`) and a run-level failure whose message echoes the Salesforce token (printed as
    # the command's last `error:` line, outside the log pipeline).
    sandboxes.stripe.inject_fault(
        status=400,
        method="POST",
        path=STRIPE_CREATE,
        count=1,
        body={
            "error": {
                "type": "invalid_request_error",
                "code": "parameter_invalid_string",
                "message": f"Invalid request for key {sandboxes.stripe_key}",
            }
        },
    )
    first = cli("sync", env=env)
    sandboxes.salesforce.inject_fault(
        status=400,
        method="GET",
        path=SF_QUERY,
        count=1,
        body=sf_errors(
            "INVALID_QUERY_FILTER_OPERATOR", f"invalid filter near session {sandboxes.access_token}"
        ),
    )
    second = cli("sync", env=env)
    status = cli("status", env=env)
    status_json = cli("status", "--json", env=env)

    assert first.returncode == 1 and second.returncode == 3, (first.stderr, second.stderr)
    assert status.returncode == 0 and status_json.returncode == 0
    output = "".join(r.stdout + r.stderr for r in (first, second, status, status_json))
    for secret in secrets:
        for piece in pieces(secret):
            assert piece not in output, f"secret {piece[:4]}... printed"
    failures = json.loads(status_json.stdout)["failures"]
    assert failures and REDACTED in failures[0]["error"]
