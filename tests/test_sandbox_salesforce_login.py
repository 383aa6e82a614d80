"""Every login flow simple-salesforce knows, against the sandbox's OAuth token endpoint:
username-password, JWT bearer (RS256, checked against the configured key or certificate) and
client credentials, with OAuth's error objects when the sandbox says no."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from connector.salesforce import loopback_session
from connector.sandbox.salesforce import SalesforceSandbox

USER, PASSWORD = "integration@acme.example", "s3cret-pass"
KEY, SECRET = "3MVG9-consumer-key", "consumer-secret-123"
DATA = {"Account": [{"Name": "Acme"}]}


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing-connector")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return _rsa()


@pytest.fixture
def org(key: rsa.RSAPrivateKey) -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(
        DATA,
        users={USER: PASSWORD},
        consumer_key=KEY,
        consumer_secret=SECRET,
        jwt_public_key=_public_pem(key),
    ) as sb:
        yield sb


# --- username-password -----------------------------------------------------------------------------


def test_password_login_gets_a_token_and_the_sandbox_instance_url(org: SalesforceSandbox) -> None:
    sf = Salesforce(
        username=USER,
        password=PASSWORD,
        consumer_key=KEY,
        consumer_secret=SECRET,
        session=loopback_session(org.url),
        version="62.0",
    )

    assert sf.sf_instance == org.url.removeprefix("http://")
    assert sf.session_id != org.access_token
    assert sf.query("SELECT Name FROM Account")["records"][0]["Name"] == "Acme"


def test_password_token_answer_has_salesforce_fields(org: SalesforceSandbox) -> None:
    resp = loopback_session(org.url).post(
        "https://login.salesforce.com/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": KEY,
            "client_secret": SECRET,
            "username": USER,
            "password": PASSWORD,
        },
    )

    body = resp.json()
    assert resp.status_code == 200
    assert set(body) == {
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
        "scope",
    }
    assert body["instance_url"] == org.url and body["token_type"] == "Bearer"
    assert body["id"].startswith(f"{org.url}/id/{org.org_id}/005")
    assert abs(int(body["issued_at"]) - time.time() * 1000) < 60_000
    assert body["access_token"].startswith(org.org_id[:15] + "!")


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        ({"password": "wrong"}, "invalid_grant", "authentication failure"),
        ({"username": "nobody@acme.example"}, "invalid_grant", "authentication failure"),
        ({"consumer_key": "other-app"}, "invalid_client_id", "client identifier invalid"),
        ({"consumer_secret": "wrong"}, "invalid_client", "invalid client credentials"),
    ],
)
def test_password_login_refusals_raise_authentication_failed(
    org: SalesforceSandbox, overrides: dict[str, str], code: str, message: str
) -> None:
    kwargs = {
        "username": USER,
        "password": PASSWORD,
        "consumer_key": KEY,
        "consumer_secret": SECRET,
        **overrides,
    }
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(session=loopback_session(org.url), version="62.0", **kwargs)
    assert (err.value.code, err.value.auth_message) == (code, message)


def test_a_login_session_is_renewed_by_the_client_after_sessions_expire(
    org: SalesforceSandbox,
) -> None:
    sf = Salesforce(
        username=USER,
        password=PASSWORD,
        consumer_key=KEY,
        consumer_secret=SECRET,
        session=loopback_session(org.url),
        version="62.0",
    )
    first = sf.session_id
    org.expire_sessions()

    assert (
        sf.query("SELECT Id FROM Account")["totalSize"] == 1
    )  # 401 INVALID_SESSION_ID, re-login, retry
    assert sf.session_id != first


# --- JWT bearer --------------------------------------------------------------------------------------


def test_jwt_login_with_the_matching_key(org: SalesforceSandbox, key: rsa.RSAPrivateKey) -> None:
    sf = Salesforce(
        username=USER,
        consumer_key=KEY,
        privatekey=_pem(key),
        session=loopback_session(org.url),
        version="62.0",
    )
    assert sf.sf_instance == org.url.removeprefix("http://")
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 1


def test_jwt_login_accepts_a_certificate_as_the_configured_key(key: rsa.RSAPrivateKey) -> None:
    with SalesforceSandbox(
        DATA, users={USER: PASSWORD}, consumer_key=KEY, jwt_public_key=_certificate(key)
    ) as sb:
        sf = Salesforce(
            username=USER,
            consumer_key=KEY,
            privatekey=_pem(key),
            session=loopback_session(sb.url),
            version="62.0",
        )
        assert sf.query("SELECT Id FROM Account")["totalSize"] == 1


def test_jwt_signed_by_another_key_is_refused(org: SalesforceSandbox) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(
            username=USER,
            consumer_key=KEY,
            privatekey=_pem(_rsa()),
            session=loopback_session(org.url),
        )
    assert (err.value.code, err.value.auth_message) == ("invalid_grant", "invalid assertion")


@pytest.mark.parametrize(
    ("claims", "code", "message"),
    [
        ({"iss": "other-app"}, "invalid_client_id", "client identifier invalid"),
        ({"sub": "stranger@acme.example"}, "invalid_grant", "user hasn't approved this consumer"),
        ({"aud": "https://evil.example"}, "invalid_grant", "audience is invalid"),
        ({"exp": str(int(time.time()) - 60)}, "invalid_grant", "expired authorization code"),
    ],
)
def test_jwt_claims_are_checked(
    org: SalesforceSandbox, key: rsa.RSAPrivateKey, claims: dict[str, str], code: str, message: str
) -> None:
    payload = {
        "iss": KEY,
        "sub": USER,
        "aud": "https://login.salesforce.com",
        "exp": str(int(time.time()) + 180),
        **claims,
    }
    assertion = jwt.encode(payload, _pem(key), algorithm="RS256")

    resp = loopback_session(org.url).post(
        "https://login.salesforce.com/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )

    assert resp.status_code == 400
    assert resp.json() == {"error": code, "error_description": message}


def test_jwt_without_a_configured_key_still_checks_the_claims() -> None:
    with SalesforceSandbox(DATA, users={USER: PASSWORD}, consumer_key=KEY) as sb:
        any_key = _pem(_rsa())
        sf = Salesforce(
            username=USER,
            consumer_key=KEY,
            privatekey=any_key,
            session=loopback_session(sb.url),
            version="62.0",
        )
        assert sf.query("SELECT Id FROM Account")["totalSize"] == 1
        # simple-salesforce warns about self-authorization on exactly this error description
        with (
            pytest.raises(SalesforceAuthenticationFailed),
            pytest.warns(UserWarning, match="self-authorize"),
        ):
            Salesforce(
                username="stranger@acme.example",
                consumer_key=KEY,
                privatekey=any_key,
                session=loopback_session(sb.url),
            )


# --- client credentials ----------------------------------------------------------------------------


def test_client_credentials_login(org: SalesforceSandbox) -> None:
    sf = Salesforce(
        consumer_key=KEY,
        consumer_secret=SECRET,
        domain="acme.my",
        session=loopback_session(org.url),
        version="62.0",
    )
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 1


def test_client_credentials_with_a_wrong_secret_is_refused(org: SalesforceSandbox) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(
            consumer_key=KEY,
            consumer_secret="nope",
            domain="acme.my",
            session=loopback_session(org.url),
        )
    assert (err.value.code, err.value.auth_message) == (
        "invalid_client",
        "invalid client credentials",
    )
    basic = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    ok = loopback_session(org.url).post(
        "https://acme.my.salesforce.com/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert ok.status_code == 200 and ok.json()["instance_url"] == org.url


def test_unknown_grant_types_are_refused(org: SalesforceSandbox) -> None:
    resp = loopback_session(org.url).post(
        "https://login.salesforce.com/services/oauth2/token",
        data={"grant_type": "authorization_code", "code": "x"},
    )
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "unsupported_grant_type",
        "error_description": "grant type not supported",
    }


def test_defaults_let_the_demo_log_in_with_a_password() -> None:
    with SalesforceSandbox(DATA) as sb:
        sf = Salesforce(
            username="admin@example.com",
            password="sandbox-password",
            consumer_key="sandbox-consumer-key",
            consumer_secret="sandbox-consumer-secret",
            session=loopback_session(sb.url),
            version="62.0",
        )
        assert sf.query("SELECT Id FROM Account")["totalSize"] == 1
