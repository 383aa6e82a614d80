"""Stripe's published description of the customer API, as shipped with the connector.

`specs/stripe_customers.openapi.json` is a byte-for-byte copy of the shared contract
(`shared/stripe-openapi/customers.openapi.json`; a test keeps them equal). The mapping checker
reads parameter types and `maxLength` from it; the sandbox validates requests and answers
against it. It is data: nothing here talks to Stripe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

SPEC_FILE = "stripe_customers.openapi.json"


@cache
def spec() -> dict[str, Any]:
    text = (
        resources.files("connector.billing")
        .joinpath("specs", SPEC_FILE)
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def resolve(node: Any) -> Any:
    """Follow a local `$ref` (one level; call again on children as you descend)."""
    while isinstance(node, dict) and "$ref" in node:
        ref: str = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = spec()
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def request_schema(path: str, method: str) -> dict[str, Any]:
    """The form-body schema of an operation, e.g. ("/v1/customers", "post")."""
    op = spec()["paths"][path][method.lower()]
    body = op.get("requestBody", {}).get("content", {}).get("application/x-www-form-urlencoded", {})
    return dict(resolve(body.get("schema", {"type": "object", "properties": {}})))


def query_parameters(path: str, method: str) -> list[dict[str, Any]]:
    """The query parameters of an operation (list, search, retrieve)."""
    op = spec()["paths"][path][method.lower()]
    return [resolve(p) for p in op.get("parameters", []) if resolve(p).get("in") == "query"]


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    op = spec()["paths"][path][method.lower()]
    responses = op["responses"]
    entry = responses.get(status) or responses["default"]
    return dict(resolve(entry["content"]["application/json"]["schema"]))


def create_params_schema() -> dict[str, Any]:
    """Schema of POST /v1/customers: every parameter a customer accepts, with limits."""
    return request_schema("/v1/customers", "post")


def update_params_schema() -> dict[str, Any]:
    """Schema of POST /v1/customers/{customer}."""
    return request_schema("/v1/customers/{customer}", "post")


# --- validation helpers -------------------------------------------------------------------
#
# Two kinds of checks live here. `coerce_params` reads form or query parameters (strings,
# nested dicts) the way Stripe's API does and reports problems with Stripe's wording; the
# sandbox answers with them and the mapping checker can use them to refuse a payload early.
# `json_schema` and `response_problems` turn the OpenAPI 3.0 description into JSON Schema
# (jsonschema is imported lazily: it is a test dependency, this module is not test-only).


@dataclass(frozen=True, slots=True)
class ParamProblem:
    """Why one parameter is refused, in the shape of a Stripe `invalid_request_error`."""

    param: str
    message: str
    code: str | None = None


class ParamError(ValueError):
    def __init__(self, problem: ParamProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _abbreviate(value: str) -> str:
    # Stripe shortens long values in messages: "Invalid string: nnnnnnnnnn...nnnnnnnnnn"
    return value if len(value) <= 23 else f"{value[:10]}...{value[-10:]}"


def _param_name(path: tuple[str, ...]) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:]) if path else ""


def _accepts_empty(schema: Mapping[str, Any]) -> bool:
    node = resolve(schema)
    if "" in node.get("enum", ()):
        return True
    return any(_accepts_empty(alt) for alt in node.get("anyOf", ()))


def coerce_params(schema: Mapping[str, Any], value: Any, path: tuple[str, ...] = ()) -> Any:
    """Check `value` against a request schema and return it typed, or raise `ParamError`.

    `value` is what a form or query string decodes to: strings, dicts of strings, and
    dicts with index keys ("0", "1") or lists for arrays. Native ints, bools and lists
    are accepted too (the sandbox's Python API uses them). An empty string is kept as ""
    where the schema allows it: Stripe reads it as "unset".
    """
    node = resolve(schema)
    name = _param_name(path)
    if "anyOf" in node:
        if value == "" and _accepts_empty(node):
            return ""
        alternatives = [resolve(a) for a in node["anyOf"]]
        non_empty = [a for a in alternatives if a.get("enum") != [""]]
        last: ParamError | None = None
        for alt in non_empty:
            try:
                return coerce_params(alt, value, path)
            except ParamError as exc:
                last = exc
        assert last is not None
        raise last
    kind = node.get("type")
    if kind == "object":
        if not isinstance(value, Mapping):
            raise ParamError(
                ParamProblem(
                    name, f"Invalid object{': ' + _abbreviate(str(value)) if value != '' else ''}"
                )
            )
        props: Mapping[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, sub in value.items():
            key = str(key)
            if key in props:
                out[key] = coerce_params(props[key], sub, (*path, key))
            elif isinstance(extra, Mapping):
                out[key] = coerce_params(extra, sub, (*path, key))
            else:
                unknown = _param_name((*path, key))
                raise ParamError(
                    ParamProblem(
                        unknown, f"Received unknown parameter: {unknown}", "parameter_unknown"
                    )
                )
        for key in node.get("required", ()):
            if key not in out:
                missing = _param_name((*path, key))
                raise ParamError(
                    ParamProblem(
                        missing, f"Missing required param: {missing}.", "parameter_missing"
                    )
                )
        return out
    if kind == "array":
        items: list[Any]
        if isinstance(value, list | tuple):
            items = list(value)
        elif isinstance(value, Mapping) and all(str(k).isdigit() for k in value):
            items = [value[k] for k in sorted(value, key=lambda k: int(k))]
        else:
            raise ParamError(ParamProblem(name, "Invalid array"))
        return [
            coerce_params(node.get("items", {}), v, (*path, str(i))) for i, v in enumerate(items)
        ]
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ParamError(
                ParamProblem(
                    name, f"Invalid integer: {_abbreviate(str(value))}", "parameter_invalid_integer"
                )
            )
        if isinstance(value, str):
            text = value.strip()
            if not text.lstrip("-").isdigit():
                raise ParamError(
                    ParamProblem(
                        name, f"Invalid integer: {_abbreviate(value)}", "parameter_invalid_integer"
                    )
                )
            value = int(text)
        if "enum" in node and value not in node["enum"]:
            raise ParamError(
                ParamProblem(name, f"Invalid {name}: must be one of {_one_of(node['enum'])}")
            )
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise ParamError(ParamProblem(name, f"Invalid boolean: {_abbreviate(str(value))}"))
    if kind == "string" or kind is None:
        if isinstance(value, Mapping | list | tuple):
            raise ParamError(ParamProblem(name, f"Invalid string: {_abbreviate(str(value))}"))
        if isinstance(value, bool):
            value = "true" if value else "false"
        value = str(value)
        if "enum" in node and value not in node["enum"]:
            raise ParamError(
                ParamProblem(name, f"Invalid {name}: must be one of {_one_of(node['enum'])}")
            )
        limit = node.get("maxLength")
        if limit is not None and len(value) > limit:
            # Stripe's wording; its published error-code list has no code for this case.
            raise ParamError(
                ParamProblem(
                    name,
                    f"Invalid string: {_abbreviate(value)}; must be at most {limit} characters",
                )
            )
        return value
    return value


def _one_of(values: list[Any]) -> str:
    shown = [str(v) for v in values if v != ""]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f", or {shown[-1]}"


def query_schema(path: str, method: str) -> dict[str, Any]:
    """The query parameters of an operation as one object schema (for `coerce_params`)."""
    params = query_parameters(path, method)
    return {
        "type": "object",
        "properties": {p["name"]: p.get("schema", {}) for p in params},
        "required": [p["name"] for p in params if p.get("required")],
    }


# --- OpenAPI 3.0 -> JSON Schema ------------------------------------------------------------


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def json_schema(ref: str, document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JSON Schema (2020-12) for `ref` ("#/paths/..." or "#/components/schemas/customer").

    OpenAPI 3.0's `nullable` becomes an `anyOf` with null; `$ref`s keep pointing into the
    converted document, which rides along under `components`.
    """
    doc = document if document is not None else spec()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": ref,
        **_converted(doc),
    }


_CONVERTED: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}


def _converted(doc: Mapping[str, Any]) -> dict[str, Any]:
    # Converting 800 kB of description takes a while; keep one copy per document object.
    hit = _CONVERTED.get(id(doc))
    if hit is None or hit[0] is not doc:
        hit = (doc, _to_json_schema({"components": doc["components"], "paths": doc["paths"]}))
        _CONVERTED[id(doc)] = hit
    return hit[1]


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def response_schema_ref(
    path: str, method: str, status: int | str, document: Mapping[str, Any] | None = None
) -> str:
    doc = document if document is not None else spec()
    responses = doc["paths"][path][method.lower()]["responses"]
    key = str(status) if str(status) in responses else "default"
    return _pointer(
        "paths", path, method.lower(), "responses", key, "content", "application/json", "schema"
    )


def request_schema_ref(path: str, method: str) -> str:
    return _pointer(
        "paths",
        path,
        method.lower(),
        "requestBody",
        "content",
        "application/x-www-form-urlencoded",
        "schema",
    )


_VALIDATORS: dict[tuple[int, str], Any] = {}


def schema_problems(
    ref: str, instance: Any, document: Mapping[str, Any] | None = None
) -> list[str]:
    """Every way `instance` breaks the schema at `ref`, as "path: message" lines."""
    from jsonschema import Draft202012Validator  # a test dependency; see the module note

    doc = document if document is not None else spec()
    key = (id(doc), ref)
    validator = _VALIDATORS.get(key)
    if validator is None:
        validator = _VALIDATORS[key] = Draft202012Validator(json_schema(ref, doc))
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(
            validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))
        )
    ]


def response_problems(
    path: str, method: str, status: int, body: Any, document: Mapping[str, Any] | None = None
) -> list[str]:
    """Check one answer of the customer API against the description (status picks 200 or default)."""
    return schema_problems(response_schema_ref(path, method, status, document), body, document)
