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
from requests.cookies import RequestsCookieJar
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict

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


class PlainSession(requests.Session):
    """A session that prepares a plain request without `requests`' general merging.

    `Session.prepare_request` merges the request's and the session's cookies, params, auth,
    headers and hooks through generic helpers (two cookie jars built per request, and
    `requests`' runtime-checked protocols, slow to test on Python 3.11): about a fifth of a
    Stripe write's CPU. When there is nothing to merge but headers (no cookies on either side,
    no auth, params, files, JSON or hooks, and the environment not trusted, as `settle` makes
    it), this builds the same PreparedRequest directly: the session's headers overlaid with the
    request's, a header set to None dropped, as `merge_setting` does. Anything else goes
    through `requests`' own path, unchanged.
    """

    def prepare_request(self, request: requests.Request) -> PreparedRequest:
        if (
            self.trust_env
            or request.cookies
            or len(self.cookies)
            or request.auth is not None
            or self.auth is not None
            or request.params
            or self.params
            or request.files
            or request.json is not None
            or any(self.hooks.values())
        ):
            return super().prepare_request(request)
        headers: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict(self.headers)
        for name, value in (request.headers or {}).items():
            headers[name] = value
        for name in [k for k, v in headers.items() if v is None]:
            del headers[name]
        prepared = PreparedRequest()
        prepared.prepare(
            method=str(request.method).upper(),
            url=request.url,
            data=request.data,
            headers=headers,
            cookies=RequestsCookieJar(),
            hooks=request.hooks,
        )
        return prepared


def plain_session() -> requests.Session:
    """A settled `PlainSession` (see `settle`)."""
    return settle(PlainSession())
