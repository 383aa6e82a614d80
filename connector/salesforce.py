"""The Salesforce source: login, SOQL paging, cursors, merges and deletes, Id write-back.

Talks to Salesforce only through simple-salesforce. It never imports a billing target or the
engine. simple-salesforce builds every URL with https://, so to reach the sandbox over plain
http on loopback the requests session gets an adapter that sends every https request to the
configured loopback address instead (the library itself stays unmodified).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from connector.config import LOOPBACK_HOSTS


class LoopbackAdapter(HTTPAdapter):
    """Sends every https:// request to an http:// server on loopback (the sandbox).

    simple-salesforce hard-codes https for the instance and for the login hosts
    (login.salesforce.com, {domain}.my.salesforce.com); all of them land on the sandbox.
    """

    def __init__(self, target: str, **kwargs: Any) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"loopback adapter only targets http on loopback, not {target!r}")
        self._netloc = parts.netloc
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        request.url = urlunsplit(("http", self._netloc, parts.path, parts.query, parts.fragment))
        return super().send(request, *args, **kwargs)


def loopback_session(target: str) -> requests.Session:
    """A requests session whose https traffic goes to `target` (http://127.0.0.1:PORT)."""
    session = requests.Session()
    session.mount("https://", LoopbackAdapter(target))
    return session
