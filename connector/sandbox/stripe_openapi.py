"""The sandbox's own reading of Stripe's published description of the customer API.

The sandbox checks what the connector sends, so it must not share the connector's code for
it: a mistake in the product's reader (`connector.billing.stripe_schema`) would then be made
by both sides and pass unseen. This module reads the description itself, from the shared
contract (`shared/stripe-openapi/customers.openapi.json` beside the repository), or, where
there is no checkout (an installed wheel running `billing-connector demo`), from the copy the
package ships (read as a file: no product module is imported). It coerces form and query
parameters the way Stripe's API does and words problems as Stripe does. Pure data and
standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# The shared contract (a checkout: <repo>/../shared), then the copy a wheel carries.
SPEC_PATHS = (
    _HERE.parents[1].parent / "shared" / "stripe-openapi" / "customers.openapi.json",
    _HERE.parent / "billing" / "specs" / "stripe_customers.openapi.json",
)


def spec_path() -> Path:
    for path in SPEC_PATHS:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "Stripe's OpenAPI description is in none of: " + ", ".join(map(str, SPEC_PATHS))
    )


@cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(spec_path().read_text(encoding="utf-8"))
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


# --- coercion, with Stripe's wording -------------------------------------------------------


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
