"""A local Chargebee site: the customer API as the official `chargebee` SDK v3 speaks it.

`ChargebeeSandbox` answers `/api/v2/customers` (create, retrieve, update, `update_billing_info`,
list with `id[is]`, `id[in]`, `email[is]`, `business_entity_id[is]` and offset paging) the way
a Chargebee test site does: HTTP Basic auth with the API key as user name, form bodies with
`billing_address[line1]` and `meta_data` as a JSON string, parameters checked against the
published description (`billing/specs/chargebee_customers.v1.openapi.json`, read as data) plus
the v2 additions, Chargebee's error bodies, `chargebee-idempotency-key` replay, business
entities with or without customer sharing (`chargebee-business-entity-id`), and 429
`api_request_limit_exceeded`. Everything is in memory. It never imports the connector's
product code (only the neutral `connector.openapi` reader) and never talks to Chargebee: it is a
server on 127.0.0.1 only.

The SDK builds its URL as `{protocol}://{site}.{chargebee_domain}/api/v2`; a client reaches this
server with `site="127"` and `chargebee_domain="0.0.1:PORT"` (see `sdk_options`), so the site
name is not visible here and any site is accepted.
"""

from __future__ import annotations

import ast
import base64
import binascii
import copy
import hashlib
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector.openapi import OpenApi
from connector.sandbox.http import Fault, Request, Response, SandboxServer

API = "/api/v2"
SPEC_FILE = (
    Path(__file__).resolve().parents[1]
    / "billing"
    / "specs"
    / "chargebee_customers.v1.openapi.json"
)

ENTITY_HEADER = "chargebee-business-entity-id"
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
REPLAYED_HEADER = "chargebee-idempotency-replayed"
IDEMPOTENCY_KEY_MAX = 100
ENTITY_ID_MAX = 50
CUSTOMER_ID_MAX = 50
LIST_LIMIT_MAX = 100
DEFAULT_ENTITY = "sandbox-default-entity"
# Chargebee keeps an idempotency key for 24 hours.
IDEMPOTENCY_WINDOW = 24 * 3600.0

_ID = re.compile(r"[A-Za-z0-9_\-.@]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_COUNTRY = re.compile(r"[A-Z]{2}")
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")

# The list filters the v2 API takes on customers ({field}[{operator}]); the v1 description
# names none of them.
LIST_FILTERS = {
    "id": ("is", "is_not", "starts_with", "in", "not_in"),
    "email": ("is", "is_not", "starts_with"),
    "business_entity_id": ("is", "is_present"),
}


# --- the published description, read as data -----------------------------------------------


@cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    return data


CHARGEBEE = OpenApi(spec)


def request_schemas() -> dict[str, dict[str, Any]]:
    """Body schemas per operation, with the v2 additions the SDK sends (see the shared README)."""
    create = copy.deepcopy(CHARGEBEE.request_schema("/customers", "post"))
    create["properties"]["business_entity_id"] = {"type": "string", "maxLength": ENTITY_ID_MAX}
    return {
        "create": create,
        "update": CHARGEBEE.request_schema("/customers/{customer-id}", "post"),
        "update_billing_info": CHARGEBEE.request_schema(
            "/customers/{customer-id}/update_billing_info", "post"
        ),
    }


# --- errors in Chargebee's shape --------------------------------------------------------------


class ChargebeeError(Exception):
    """Raised inside a handler; answered as Chargebee's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request",
        api_error_code: str = "invalid_request",
        error_code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.api_error_code = api_error_code
        self.error_code = error_code or api_error_code
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(
            self.status,
            self.message,
            type=self.type,
            api_error_code=self.api_error_code,
            error_code=self.error_code,
            param=self.param,
        )


def error_body(
    status: int,
    message: str,
    *,
    type: str = "invalid_request",
    api_error_code: str = "invalid_request",
    error_code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """Chargebee's error body: `message` prefixed with the parameter, plus the legacy fields."""
    body: dict[str, Any] = {"message": f"{param} : {message}" if param else message}
    body["type"] = type
    body["api_error_code"] = api_error_code
    if param:
        body["param"] = param
    body["error_code"] = error_code or api_error_code
    body["error_msg"] = message
    if param:
        body["error_param"] = param
    body["http_status_code"] = status
    return body


RATE_LIMIT_MESSAGE = (
    "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. "
    "Please try after some time."
)


def rate_limit_body() -> dict[str, Any]:
    return error_body(
        429,
        RATE_LIMIT_MESSAGE,
        type="operation_failed",
        api_error_code="api_request_limit_exceeded",
    )


def lock_timeout_body() -> dict[str, Any]:
    return error_body(
        429,
        "Another request is accessing the same resource. Please retry.",
        type="operation_failed",
        api_error_code="lock_timeout",
    )


def internal_error_body() -> dict[str, Any]:
    return error_body(
        500,
        "Sorry, something went wrong when trying to process the request.",
        type="operation_failed",
        api_error_code="internal_error",
    )


def temporary_error_body() -> dict[str, Any]:
    return error_body(
        503,
        "Sorry, the server is currently unable to handle the request. Please retry after sometime.",
        type="operation_failed",
        api_error_code="internal_temporary_error",
    )


def _bad(
    param: str, message: str, *, code: str = "param_wrong_value", error_code: str | None = None
) -> ChargebeeError:
    return ChargebeeError(400, message, api_error_code=code, error_code=error_code, param=param)


def _not_found(what: str) -> ChargebeeError:
    return ChargebeeError(
        404, f"Sorry, we couldn't find that resource: {what}", api_error_code="resource_not_found"
    )


# --- form bodies ------------------------------------------------------------------------------


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest `billing_address[line1]=v` and `id[is]=v` pairs (one level is all customers use)."""
    root: dict[str, Any] = {}
    for raw, value in pairs:
        m = _KEY.fullmatch(raw)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))] if m else [raw]
        if len(parts) > 2 or "" in parts:
            raise _bad(raw, "invalid parameter")
        if len(parts) == 1:
            if isinstance(root.get(parts[0]), dict):
                raise _bad(raw, "invalid parameter")
            root[parts[0]] = value
        else:
            node = root.setdefault(parts[0], {})
            if not isinstance(node, dict):
                raise _bad(raw, "invalid parameter")
            node[parts[1]] = value
    return root


def _check(
    schema: Mapping[str, Any], params: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """Type and length checks of the description; `cf_*` custom fields are free text."""
    props: Mapping[str, Any] = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        sub = props.get(key)
        if sub is None:
            if not prefix and key.startswith("cf_") and isinstance(value, str):
                out[key] = value
                continue
            raise _bad(
                name,
                "is not a valid parameter for this request",
                code="invalid_request",
                error_code="param_not_allowed",
            )
        kind = sub.get("type")
        if kind == "object" and key == "meta_data":
            out[key] = _meta_data(value)
        elif kind == "object":
            if not isinstance(value, Mapping):
                raise _bad(name, "invalid value")
            out[key] = _check(sub, value, name)
        elif isinstance(value, Mapping):
            raise _bad(name, "invalid value")
        elif kind == "boolean":
            if value not in ("true", "false"):
                raise _bad(name, "invalid boolean value")
            out[key] = value == "true"
        elif kind == "integer":
            if not str(value).lstrip("-").isdigit():
                raise _bad(name, "invalid integer value")
            out[key] = int(value)
        else:
            text = str(value)
            if "enum" in sub and text and text not in sub["enum"]:
                raise _bad(name, f"invalid value {text!r}; must be one of {', '.join(sub['enum'])}")
            limit = sub.get("maxLength")
            if limit is not None and len(text) > limit:
                raise _bad(
                    name,
                    f"cannot be more than {limit} characters in length.",
                    error_code="param_max_length_exceeded",
                )
            if text and sub.get("format") == "email" and not _EMAIL.fullmatch(text):
                raise _bad(name, "invalid email format", error_code="param_invalid_email")
            if text and name.endswith("[country]") and not _COUNTRY.fullmatch(text):
                raise _bad(
                    name,
                    "invalid country code; use the ISO 3166 alpha-2 code",
                    error_code="param_invalid_country",
                )
            out[key] = text
    return out


def _meta_data(value: Any) -> dict[str, Any]:
    # The SDK sends meta_data as given; Chargebee takes it only as a JSON object in text.
    if not isinstance(value, str):
        raise _bad("meta_data", "invalid JSON: send the object as a JSON string")
    try:
        data = json.loads(value) if value else {}
    except ValueError:
        raise _bad("meta_data", "invalid JSON") from None
    if not isinstance(data, dict):
        raise _bad("meta_data", "must be a JSON object")
    return data


# --- the site -------------------------------------------------------------------------------


@dataclass
class _Customer:
    seq: int
    entity: str
    data: dict[str, Any]


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: bytes | None
    stamp: float


_BILLING_KEYS = (
    "first_name",
    "last_name",
    "email",
    "company",
    "phone",
    "line1",
    "line2",
    "line3",
    "city",
    "state_code",
    "state",
    "country",
    "zip",
)


class ChargebeeSandbox(SandboxServer):
    """The customer part of a Chargebee test site with business entities, in memory.

    Keys: any key starting `test_`, or exactly `api_keys` when given. Business entities: one
    default entity unless `business_entities` names them (the first is the default). With
    `customer_sharing`, a customer of one entity is seen (retrieved, updated, listed) from
    every entity of the site; without it, a request scoped to another entity finds nothing.
    A request without the entity header sees the whole site and creates in the default one.

    Control API besides the base's: POST /_sandbox/load ({"business_entities", "customer_sharing",
    "customers"}), POST /_sandbox/reset, GET /_sandbox/customers, POST
    /_sandbox/customers/{id}/edit and /delete, POST /_sandbox/idempotency/expire; POST /_sandbox/faults
    also takes {"kind": "rate_limit" | "lock_timeout" | "internal_error" | "temporary_error"}.
    """

    kind = "chargebee"

    def __init__(
        self,
        *,
        port: int = 0,
        api_keys: Collection[str] | None = None,
        business_entities: Iterable[str] = (DEFAULT_ENTITY,),
        customer_sharing: bool = False,
        idempotency_window: float | None = IDEMPOTENCY_WINDOW,
    ) -> None:
        super().__init__(port)
        self.api_keys: frozenset[str] | None = frozenset(api_keys) if api_keys is not None else None
        self.idempotency_window = idempotency_window
        self.entities: list[str] = []
        self.customer_sharing = False
        self.configure_entities(business_entities, customer_sharing=customer_sharing)
        self.write_count = 0
        self.operations: Counter[str] = Counter()
        #: every API exchange: what the client sent and what it got (for the contract tests)
        self.exchanges: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._customers: dict[str, _Customer] = {}
        self._seq = 0
        self._idempotency: dict[str, _Stored] = {}
        self._clock = threading.Lock()
        self._last_ms = 0
        cid = r"(?P<customer>[^/]+)"
        self.route("GET", f"{API}/customers", self._list)
        self.route("POST", f"{API}/customers", self._create)
        self.route("GET", f"{API}/customers/{cid}", self._retrieve)
        self.route("POST", f"{API}/customers/{cid}", self._update)
        self.route("POST", f"{API}/customers/{cid}/update_billing_info", self._update_billing_info)
        self.route("POST", r"/_sandbox/load", self._ctl_load)
        self.route("POST", r"/_sandbox/reset", self._ctl_reset)
        self.route("GET", r"/_sandbox/customers", self._ctl_customers)
        self.route("POST", r"/_sandbox/customers/(?P<customer>[^/]+)/edit", self._ctl_edit)
        self.route("POST", r"/_sandbox/customers/(?P<customer>[^/]+)/delete", self._ctl_delete)
        self.route("POST", r"/_sandbox/idempotency/expire", self._ctl_expire)

    def __enter__(self) -> ChargebeeSandbox:
        super().__enter__()
        return self

    def start(self) -> ChargebeeSandbox:
        super().start()
        return self

    def sdk_options(self) -> dict[str, str]:
        """`Chargebee(api_key, **options)` that reach this server (with verify_ca_certs False).

        The SDK joins site and domain with a dot; "127" + "0.0.1:PORT" is this address.
        """
        host, _, rest = urlsplit(self.url).netloc.partition(".")
        return {"site": host, "chargebee_domain": rest, "protocol": "http"}

    # --- Python API ------------------------------------------------------------------------

    def configure_entities(self, ids: Iterable[str], *, customer_sharing: bool = False) -> None:
        """Set the site's business entities (the first is the default) and customer sharing."""
        entities = [str(i) for i in ids]
        if not entities or len(set(entities)) != len(entities):
            raise ValueError("business entities: give at least one, each once")
        for e in entities:
            if len(e) > ENTITY_ID_MAX or not _ID.fullmatch(e):
                raise ValueError(f"business entity id {e!r} is not a valid Chargebee id")
        with self.lock:
            self.entities = entities
            self.customer_sharing = bool(customer_sharing)

    @property
    def default_entity(self) -> str:
        return self.entities[0]

    def load(self, data: Mapping[str, Any]) -> list[str]:
        """Set entities and add customers; returns their ids. Not counted as writes.

        `{"business_entities": [...], "customer_sharing": bool, "customers": [{...}]}`; each
        customer takes the create parameters as Python values (`meta_data` a dict,
        `billing_address` a dict) plus optional `created_at`. Raises ValueError with
        Chargebee's message for what the API would refuse.
        """
        if "business_entities" in data or "customer_sharing" in data:
            self.configure_entities(
                data.get("business_entities") or self.entities,
                customer_sharing=bool(data.get("customer_sharing", self.customer_sharing)),
            )
        ids = []
        with self.lock:
            for entry in data.get("customers", []):
                entry = dict(entry)
                created = entry.pop("created_at", None)
                try:
                    params = _check(request_schemas()["create"], _as_form_values(entry))
                    record = self._new(params, header_entity=None, created_at=created)
                except ChargebeeError as exc:
                    raise ValueError(exc.body()["message"]) from None
                ids.append(record.data["id"])
        return ids

    def reset(self) -> None:
        """Forget customers, idempotency keys and counts (entities, faults and limits stay)."""
        with self.lock:
            self._customers.clear()
            self._idempotency.clear()
            self._seq = 0
            self.write_count = 0
            self.operations.clear()
            self.exchanges.clear()
            self.requests.clear()
            self.rate_limited = 0

    def customers(self, entity: str | None = None) -> list[dict[str, Any]]:
        """Every customer as the API returns it, oldest first; only `entity`'s when given."""
        with self.lock:
            return [
                self._render(r)
                for r in sorted(self._customers.values(), key=lambda r: r.seq)
                if entity is None or r.entity == entity
            ]

    def get_customer(self, id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self._customers.get(id)
            return self._render(record) if record else None

    def edit_customer(self, id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """An edit made in Chargebee's web app: not an API request, not counted.

        Takes update parameters as Python values plus `billing_address` (a dict, merged).
        Raises KeyError for an unknown customer, ValueError for what Chargebee would refuse.
        """
        with self.lock:
            record = self._customers.get(id)
            if record is None:
                raise KeyError(id)
            fields = dict(fields)
            address = fields.pop("billing_address", None)
            try:
                params = _check(request_schemas()["update"], _as_form_values(fields))
                if address is not None:
                    billing = _check(
                        request_schemas()["update_billing_info"],
                        _as_form_values({"billing_address": address}),
                    )
                    merged = {
                        **(record.data.get("billing_address") or {}),
                        **billing["billing_address"],
                    }
                    self._set_billing(record, merged)
            except ChargebeeError as exc:
                raise ValueError(exc.body()["message"]) from None
            self._apply(record, params)
            return self._render(record)

    def delete_customer(self, id: str) -> dict[str, Any]:
        """A customer deleted in Chargebee's web app: retrieve and update answer 404 from now on,
        a list with include_deleted=true shows it with `deleted: true`, and its id stays taken."""
        with self.lock:
            record = self._customers.get(id)
            if record is None or record.data.get("deleted"):
                raise KeyError(id)
            record.data["deleted"] = True
            self._touch(record)
            return self._render(record)

    def expire_idempotency_keys(self, older_than: float = 0.0) -> int:
        """Forget idempotency keys at least `older_than` seconds old (all by default)."""
        with self.lock:
            cutoff = time.monotonic() - older_than
            gone = [k for k, v in self._idempotency.items() if v.stamp <= cutoff]
            for k in gone:
                del self._idempotency[k]
            return len(gone)

    def inject_rate_limit(
        self, count: int = 1, *, method: str | None = None, path: str | None = None
    ) -> Fault:
        """The next `count` matching requests answer 429 `api_request_limit_exceeded`."""
        return self.inject_fault(
            count=count, status=429, body=rate_limit_body(), method=method, path=path
        )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                **super().stats(),
                "operations": dict(self.operations),
                "write_count": self.write_count,
                "idempotent_replays": self.operations["replay"],
                "customers": len(self._customers),
                "business_entities": list(self.entities),
                "customer_sharing": self.customer_sharing,
            }

    # --- HTTP plumbing ---------------------------------------------------------------------

    def dispatch(self, req: Request) -> Response:
        if req.path.startswith("/_sandbox/"):
            return super().dispatch(req)
        with self.lock:
            try:
                return self._authenticate(req) or self._idempotent(req)
            except ChargebeeError as exc:
                return Response.json(exc.body(), exc.status)
            except Exception as exc:  # a sandbox bug still answers in Chargebee's shape
                body = internal_error_body()
                body["message"] = body["error_msg"] = f"sandbox error: {type(exc).__name__}: {exc}"
                return Response.json(body, 500)

    def not_found(self, req: Request) -> Response:
        return Response.json(_not_found(f"{req.method} {req.path}").body(), 404)

    def method_not_allowed(self, req: Request) -> Response:
        body = error_body(
            405,
            f"The HTTP method {req.method} is not supported for {req.path}",
            api_error_code="http_method_not_supported",
        )
        return Response.json(body, 405)

    def rate_limited_response(self, req: Request) -> Response:
        return Response.json(rate_limit_body(), 429)

    def decorate(self, req: Request, resp: Response) -> Response:
        if resp.status >= 400 and not resp.body:
            # an injected fault without a body still answers in Chargebee's shape
            body = {429: rate_limit_body(), 503: temporary_error_body()}.get(
                resp.status, internal_error_body()
            )
            resp = Response.json(body, resp.status, resp.headers)
        resp.headers.setdefault("Content-Type", "application/json;charset=utf-8")
        self.exchanges.append(
            {
                "method": req.method,
                "path": req.path,
                "query": [(k, v) for k, vs in req.query.items() for v in vs],
                "form": parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
                if req.body
                else [],
                "headers": {k: v for k, v in req.headers.items() if k != "authorization"},
                "status": resp.status,
                "response": json.loads(resp.body) if resp.body else None,
                "replayed": resp.headers.get(REPLAYED_HEADER) == "true",
            }
        )
        return resp

    def _ctl_faults(self, req: Request) -> Response:
        spec_ = req.json() or {}
        kind = spec_.get("kind")
        target = {k: spec_[k] for k in ("count", "method", "path") if k in spec_}
        bodies = {
            "rate_limit": (429, rate_limit_body),
            "lock_timeout": (429, lock_timeout_body),
            "internal_error": (500, internal_error_body),
            "temporary_error": (503, temporary_error_body),
        }
        if kind in bodies:
            status, make = bodies[kind]
            self.inject_fault(status=status, body=make(), **target)
            return Response.json({"ok": True})
        return super()._ctl_faults(req)

    def _ctl_load(self, req: Request) -> Response:
        try:
            ids = self.load(req.json() or {})
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json({"ids": ids})

    def _ctl_reset(self, req: Request) -> Response:
        self.reset()
        return Response.json({"ok": True})

    def _ctl_customers(self, req: Request) -> Response:
        return Response.json({"customers": self.customers(req.query_one("business_entity_id"))})

    def _ctl_edit(self, req: Request) -> Response:
        try:
            return Response.json(self.edit_customer(req.params["customer"], req.json() or {}))
        except KeyError:
            return Response.json({"error": "no such customer"}, 404)
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)

    def _ctl_delete(self, req: Request) -> Response:
        try:
            return Response.json(self.delete_customer(req.params["customer"]))
        except KeyError:
            return Response.json({"error": "no such customer"}, 404)

    def _ctl_expire(self, req: Request) -> Response:
        return Response.json(
            {
                "expired": self.expire_idempotency_keys(
                    float((req.json() or {}).get("older_than", 0))
                )
            }
        )

    def _authenticate(self, req: Request) -> Response | None:
        scheme, _, credential = (req.header("authorization") or "").partition(" ")
        key = ""
        if scheme.lower() == "basic":
            try:
                key = (
                    base64.b64decode(credential.strip(), validate=True)
                    .decode("utf-8")
                    .partition(":")[0]
                )
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        if not key:
            body = error_body(
                401,
                "Sorry, authentication failed. The API key is missing or malformed.",
                type="untyped",
                api_error_code="api_authentication_failed",
                error_code="api_authentication_invalid_key",
            )
            return Response.json(body, 401)
        known = key in self.api_keys if self.api_keys is not None else key.startswith("test_")
        if not known:
            body = error_body(
                401,
                "Sorry, authentication failed. Invalid api key.",
                type="untyped",
                api_error_code="api_authentication_failed",
                error_code="api_authentication_invalid_key",
            )
            return Response.json(body, 401)
        return None

    def _idempotent(self, req: Request) -> Response:
        key = req.header(IDEMPOTENCY_HEADER)
        if req.method != "POST" or key is None:
            return super().dispatch(req)
        if not key or len(key) > IDEMPOTENCY_KEY_MAX:
            raise ChargebeeError(
                400,
                f"The idempotency key must be 1 to {IDEMPOTENCY_KEY_MAX} characters long.",
                api_error_code="invalid_request",
                error_code="idempotency_key_invalid",
            )
        fingerprint = hashlib.sha256(
            b"\0".join(
                [
                    req.path.encode(),
                    (req.header(ENTITY_HEADER) or "").encode(),
                    "&".join(
                        sorted(
                            f"{k}={v}"
                            for k, v in parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
                        )
                    ).encode(),
                ]
            )
        ).hexdigest()
        now = time.monotonic()
        stored = self._idempotency.get(key)
        if (
            stored is not None
            and self.idempotency_window is not None
            and now - stored.stamp > self.idempotency_window
        ):
            del self._idempotency[key]
            stored = None
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise ChargebeeError(
                    400,
                    "The idempotency key has already been used with a different request.",
                    api_error_code="invalid_request",
                    error_code="idempotency_key_reused",
                )
            self.operations["replay"] += 1
            return Response(
                stored.status,
                stored.body,
                {"Content-Type": "application/json;charset=utf-8", REPLAYED_HEADER: "true"},
            )
        resp = super().dispatch(req)
        # Only what the endpoint did is kept: a failed request can be retried with its key.
        if 200 <= resp.status < 300:
            self._idempotency[key] = _Stored(fingerprint, resp.status, resp.body, now)
        return resp

    # --- endpoints ---------------------------------------------------------------------------

    def _entity_of(self, req: Request) -> str | None:
        entity = req.header(ENTITY_HEADER)
        if entity is None:
            return None
        if entity not in self.entities:
            raise ChargebeeError(
                400,
                f"Business entity '{entity}' does not exist on this site.",
                api_error_code="invalid_request",
                error_code="business_entity_not_found",
                param=ENTITY_HEADER,
            )
        return entity

    def _visible(self, record: _Customer, entity: str | None) -> bool:
        return entity is None or record.entity == entity or self.customer_sharing

    def _find(self, req: Request) -> _Customer:
        entity = self._entity_of(req)
        cid = req.params["customer"]
        record = self._customers.get(cid)
        # A deleted customer is gone for retrieve and update; only a list with
        # include_deleted=true still shows it.
        if record is None or record.data.get("deleted") or not self._visible(record, entity):
            raise _not_found(f"customer {cid}")
        return record

    def _form(self, req: Request) -> dict[str, Any]:
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if req.body and ctype != "application/x-www-form-urlencoded":
            raise ChargebeeError(400, "The request body must be application/x-www-form-urlencoded.")
        return parse_form(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True))

    def _create(self, req: Request) -> Response:
        params = _check(request_schemas()["create"], self._form(req))
        record = self._new(params, header_entity=self._entity_of(req))
        self.write_count += 1
        self.operations["create"] += 1
        return Response.json({"customer": self._render(record)})

    def _retrieve(self, req: Request) -> Response:
        record = self._find(req)
        self.operations["retrieve"] += 1
        return Response.json({"customer": self._render(record)})

    def _update(self, req: Request) -> Response:
        record = self._find(req)
        params = _check(request_schemas()["update"], self._form(req))
        self._apply(record, params)
        self.write_count += 1
        self.operations["update"] += 1
        return Response.json({"customer": self._render(record)})

    def _update_billing_info(self, req: Request) -> Response:
        record = self._find(req)
        params = _check(request_schemas()["update_billing_info"], self._form(req))
        if "vat_number" in params:
            record.data["vat_number"] = params["vat_number"]
        if "billing_address" in params:
            # The address given replaces the stored one: fields left out are cleared.
            self._set_billing(record, params["billing_address"])
        self._touch(record)
        self.write_count += 1
        self.operations["update_billing_info"] += 1
        return Response.json({"customer": self._render(record)})

    def _list(self, req: Request) -> Response:
        entity = self._entity_of(req)
        limit, offset, include_deleted, filters = self._list_params(req)
        rows = sorted(
            (
                r
                for r in self._customers.values()
                if self._visible(r, entity) and (include_deleted or not r.data.get("deleted"))
            ),
            key=lambda r: -r.seq,  # newest first, as Chargebee lists by default
        )
        rows = [r for r in rows if all(_matches(r, f, op, v) for f, op, v in filters)]
        if offset is not None:
            rows = [r for r in rows if r.seq < offset]
        page = rows[:limit]
        self.operations["list"] += 1
        body: dict[str, Any] = {"list": [{"customer": self._render(r)} for r in page]}
        if len(rows) > limit:
            body["next_offset"] = json.dumps(
                [str(page[-1].data["created_at"]), str(page[-1].seq)], separators=(",", ":")
            )
        return Response.json(body)

    def _list_params(
        self, req: Request
    ) -> tuple[int, int | None, bool, list[tuple[str, str, Any]]]:
        limit, offset, deleted = 10, None, False
        filters: list[tuple[str, str, Any]] = []
        for name, values in req.query.items():
            value = values[-1]
            if name == "limit":
                if not value.isdigit() or not 1 <= int(value) <= LIST_LIMIT_MAX:
                    raise _bad("limit", f"must be between 1 and {LIST_LIMIT_MAX}")
                limit = int(value)
            elif name == "offset":
                try:
                    offset = int(json.loads(value)[1])
                except (ValueError, IndexError, TypeError, KeyError):
                    raise _bad("offset", "invalid offset") from None
            elif name == "include_deleted":
                if value not in ("true", "false"):
                    raise _bad(name, "invalid boolean value")
                deleted = value == "true"
            else:
                m = re.fullmatch(r"([a-z_]+)\[([a-z_]+)\]", name)
                if (
                    not m
                    or m.group(1) not in LIST_FILTERS
                    or m.group(2) not in LIST_FILTERS[m.group(1)]
                ):
                    raise _bad(
                        name,
                        "is not a valid filter for customers",
                        code="invalid_request",
                        error_code="param_not_allowed",
                    )
                field_, op = m.group(1), m.group(2)
                parsed: Any = value
                if op in ("in", "not_in"):
                    parsed = _value_list(name, value)
                elif op == "is_present":
                    if value not in ("true", "false"):
                        raise _bad(name, "invalid boolean value")
                    parsed = value == "true"
                filters.append((field_, op, parsed))
        return limit, offset, deleted, filters

    # --- records -----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        # resource_version is a strictly increasing millisecond stamp, as Chargebee's is.
        with self._clock:
            self._last_ms = max(self._last_ms + 1, int(time.time() * 1000))
            return self._last_ms

    def _new(
        self, params: dict[str, Any], *, header_entity: str | None, created_at: Any = None
    ) -> _Customer:
        body_entity = params.pop("business_entity_id", None)
        if header_entity and body_entity and header_entity != body_entity:
            raise _bad(
                "business_entity_id", f"does not match the {ENTITY_HEADER} header ({header_entity})"
            )
        entity = header_entity or body_entity or self.default_entity
        if entity not in self.entities:
            raise _bad(
                "business_entity_id", f"business entity '{entity}' does not exist on this site"
            )
        cid = params.pop("id", None) or self._generated_id()
        if not _ID.fullmatch(cid):
            raise _bad("id", "invalid value: use letters, digits, '_', '-', '.' or '@'")
        if cid in self._customers:
            raise ChargebeeError(
                400,
                f"The value {cid} is already present.",
                api_error_code="duplicate_entry",
                error_code="param_not_unique",
                param="id",
            )
        now = self._now_ms()
        data: dict[str, Any] = {
            "id": cid,
            "auto_collection": "on",
            "net_term_days": 0,
            "allow_direct_debit": False,
            "created_at": int(created_at) if created_at is not None else now // 1000,
            "taxability": "taxable",
            "updated_at": now // 1000,
            "pii_cleared": "active",
            "channel": "web",
            "resource_version": now,
            "deleted": False,
            "object": "customer",
            "card_status": "no_card",
            "promotional_credits": 0,
            "refundable_credits": 0,
            "excess_payments": 0,
            "unbilled_charges": 0,
            "account_credits": 0,
            "preferred_currency_code": "USD",
            "business_entity_id": entity,
        }
        self._seq += 1
        record = _Customer(self._seq, entity, data)
        address = params.pop("billing_address", None)
        self._apply(record, params, touch=False)
        if address:
            self._set_billing(record, address)
        self._customers[cid] = record
        return record

    def _generated_id(self) -> str:
        while True:
            cid = "AzZ" + hashlib.sha1(f"{time.time_ns()}-{self._seq}".encode()).hexdigest()[:14]
            if cid not in self._customers:
                return cid

    def _apply(self, record: _Customer, params: Mapping[str, Any], *, touch: bool = True) -> None:
        for key, value in params.items():
            if key == "meta_data":
                # meta_data is replaced as a whole; an empty object clears it.
                if value:
                    record.data["meta_data"] = dict(value)
                else:
                    record.data.pop("meta_data", None)
            elif value == "":
                record.data.pop(key, None)  # an empty value clears the field
            else:
                record.data[key] = value
        if touch:
            self._touch(record)

    def _set_billing(self, record: _Customer, address: Mapping[str, Any]) -> None:
        kept = {k: address[k] for k in _BILLING_KEYS if address.get(k)}
        if kept:
            record.data["billing_address"] = {
                **kept,
                "validation_status": "not_validated",
                "object": "billing_address",
            }
        else:
            record.data.pop("billing_address", None)

    def _touch(self, record: _Customer) -> None:
        now = self._now_ms()
        record.data["resource_version"] = now
        record.data["updated_at"] = now // 1000

    def _render(self, record: _Customer) -> dict[str, Any]:
        return copy.deepcopy(record.data)


def _matches(record: _Customer, field_: str, op: str, value: Any) -> bool:
    have = record.data.get(field_)
    if op == "is":
        return bool(have == value)
    if op == "is_not":
        return bool(have != value)
    if op == "starts_with":
        return isinstance(have, str) and have.startswith(str(value))
    if op == "in":
        return bool(have in value)
    if op == "not_in":
        return bool(have not in value)
    if op == "is_present":
        return (have is not None) is bool(value)
    return False


def _value_list(name: str, value: str) -> list[str]:
    # Chargebee documents `["a","b"]`; SDK v3 sends the Python repr `['a', 'b']`, which the
    # API takes as well. Both are read; anything else is refused.
    try:
        parsed = json.loads(value)
    except ValueError:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = None
    if not isinstance(parsed, list) or not all(isinstance(v, str | int) for v in parsed):
        raise _bad(name, 'must be an array of values like ["a","b"]')
    return [str(v) for v in parsed]


def _as_form_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """Python values as the form would carry them (for `load` and `edit_customer`)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "meta_data" and isinstance(value, Mapping):
            out[key] = json.dumps(value)
        elif isinstance(value, Mapping):
            out[key] = {k: _scalar(v) for k, v in value.items()}
        else:
            out[key] = _scalar(value)
    return out


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
