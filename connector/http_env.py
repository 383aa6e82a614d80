"""Reading once, per session, what `requests` would otherwise read from the environment on every
request.

A `requests.Session` with `trust_env` on (the default) looks up proxy variables, NO_PROXY
matching, a CA bundle variable and ~/.netrc for every request it sends: about a sixth of the
connector's CPU per created customer, for settings that do not change while a run lasts.

When no proxy variable is set, the sessions of the Salesforce and billing clients turn
`trust_env` off and take the CA bundle variable (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) once, now.
When one is set (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY, any case), they keep `requests`'
own per-request handling, so a proxy and its exceptions work exactly as documented by `requests`;
that costs the CPU again, only where a proxy is in use. ~/.netrc is never read with `trust_env`
off: both services authenticate with a header, which a netrc entry could only override wrongly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import requests

_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def proxy_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment names a proxy (or proxy exceptions) for any scheme: the
    `<scheme>_proxy` variables, in either case, that `requests` consults through urllib."""
    env = os.environ if environ is None else environ
    return any(k.lower().endswith("_proxy") and v.strip() for k, v in env.items())


def settle(session: requests.Session) -> requests.Session:
    """Turn off per-request environment reads on `session` unless a proxy is configured."""
    if proxy_configured():
        return session
    session.trust_env = False
    bundle = next((os.environ[v] for v in _CA_BUNDLE_VARIABLES if os.environ.get(v)), None)
    if bundle and session.verify is True:
        session.verify = bundle
    return session


def settled_session() -> requests.Session:
    return settle(requests.Session())
