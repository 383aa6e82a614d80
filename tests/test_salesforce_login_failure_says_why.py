"""A refused Salesforce login says what Salesforce answered (its error code and description),
so an admin can tell a wrong password from an unapproved connected app; the command exits 3
and prints no secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import MAPPINGS

from connector.sandbox.run import SandboxPair


def test_a_refused_password_login_prints_salesforces_reason(
    sandboxes: SandboxPair, tmp_path: Path
) -> None:
    user, password, consumer_secret = "integration@acme.example", "Pa55-w0rd-7c1d9e", "cs-4b8a2f61"
    sandboxes.salesforce.users = {user: "a-different-password"}
    sandboxes.salesforce.consumer_secret = consumer_secret
    data = sandboxes.config_dict(state_url=f"sqlite:///{tmp_path / 'state.db'}",
                                 mappings_dir=str(MAPPINGS))
    data["salesforce"].update(auth="password", username=user,
                              consumer_key=sandboxes.salesforce.consumer_key)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env.update(SALESFORCE_PASSWORD=password, SALESFORCE_CONSUMER_SECRET=consumer_secret,
               STRIPE_API_KEY=sandboxes.stripe_key, BILLING_CONNECTOR_CONFIG=str(cfg))

    result = subprocess.run([sys.executable, "-m", "connector", "sync"], env=env,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 3, result.stderr
    assert "{content}" not in result.stderr
    # The sandbox answers as Salesforce's token endpoint does: error and error_description.
    assert "invalid_grant" in result.stderr and "authentication failure" in result.stderr
    assert password not in result.stderr and consumer_secret not in result.stderr
    assert sandboxes.stripe.customers() == []
