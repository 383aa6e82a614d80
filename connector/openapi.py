"""An OpenAPI 3.0 description read as data, and checks of a request or an answer against it.

Neutral ground between the product and its test double: the billing adapters read their
mapping schemas with it, and the sandbox checks what the connector sends with it, so it imports
neither (standard library only; jsonschema, a test dependency, only inside `schema_problems`).
Which description, and from where, stays with each caller: an `OpenApi` is built on a function
that loads it, so the sandbox still reads the shared contract itself. What keeps a mistake
here from passing on both sides is the contract tests, which check requests and answers with
jsonschema (`schema_problems`), not with `coerce_params`.

`coerce_params` reads form and query parameters the way Stripe's form-encoded API does and
words problems as Stripe does; Chargebee's sandbox words its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

FORM = "application/x-www-form-urlencoded"


def packaged(package: str, *parts: str) -> dict[str, Any]:
    """A JSON description shipped inside `package` (read through importlib.resources, so an
    installed wheel finds it too)."""
    text = resources.files(package).joinpath(*parts).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


# --- problems, in the shape of a Stripe `invalid_request_error` -----------------------------


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


@dataclass(frozen=True, slots=True)
class OpenApi:
    """One published description; `load` reads it (and should cache what it read)."""

    load: Callable[[], dict[str, Any]]

    def spec(self) -> dict[str, Any]:
        return self.load()

    def resolve(self, node: Any) -> Any:
        """Follow a local `$ref` (one level; call again on children as you descend)."""
        while isinstance(node, dict) and "$ref" in node:
            ref: str = node["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = self.spec()
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def request_schema(self, path: str, method: str) -> dict[str, Any]:
        """The form-body schema of an operation, e.g. ("/v1/customers", "post")."""
        op = self.spec()["paths"][path][method.lower()]
        body = op.get("requestBody", {}).get("content", {}).get(FORM, {})
        return dict(self.resolve(body.get("schema", {"type": "object", "properties": {}})))

    def query_parameters(self, path: str, method: str) -> list[dict[str, Any]]:
        """The query parameters of an operation (list, search, retrieve)."""
        op = self.spec()["paths"][path][method.lower()]
        params = (self.resolve(p) for p in op.get("parameters", []))
        return [p for p in params if p.get("in") == "query"]

    def query_schema(self, path: str, method: str) -> dict[str, Any]:
        """The query parameters of an operation as one object schema (for `coerce_params`)."""
        params = self.query_parameters(path, method)
        return {
            "type": "object",
            "properties": {p["name"]: p.get("schema", {}) for p in params},
            "required": [p["name"] for p in params if p.get("required")],
        }

    def response_schema(self, path: str, method: str, status: str = "200") -> dict[str, Any]:
        op = self.spec()["paths"][path][method.lower()]
        responses = op["responses"]
        entry = responses.get(status) or responses["default"]
        return dict(self.resolve(entry["content"]["application/json"]["schema"]))

    # --- form and query parameters, with Stripe's wording -------------------------------------

    def coerce_params(
        self, schema: Mapping[str, Any], value: Any, path: tuple[str, ...] = ()
    ) -> Any:
        """Check `value` against a request schema and return it typed, or raise `ParamError`.

        `value` is what a form or query string decodes to: strings, dicts of strings, and
        dicts with index keys ("0", "1") or lists for arrays. Native ints, bools and lists
        are accepted too (the sandbox's Python API uses them). An empty string is kept as ""
        where the schema allows it: Stripe reads it as "unset".
        """
        node = self.resolve(schema)
        name = _param_name(path)
        if "anyOf" in node:
            if value == "" and self._accepts_empty(node):
                return ""
            alternatives = [self.resolve(a) for a in node["anyOf"]]
            non_empty = [a for a in alternatives if a.get("enum") != [""]]
            last: ParamError | None = None
            for alt in non_empty:
                try:
                    return self.coerce_params(alt, value, path)
                except ParamError as exc:
                    last = exc
            assert last is not None
            raise last
        kind = node.get("type")
        if kind == "object":
            if not isinstance(value, Mapping):
                raise ParamError(
                    ParamProblem(
                        name,
                        f"Invalid object{': ' + _abbreviate(str(value)) if value != '' else ''}",
                    )
                )
            props: Mapping[str, Any] = node.get("properties", {})
            extra = node.get("additionalProperties")
            out: dict[str, Any] = {}
            for key, sub in value.items():
                key = str(key)
                if key in props:
                    out[key] = self.coerce_params(props[key], sub, (*path, key))
                elif isinstance(extra, Mapping):
                    out[key] = self.coerce_params(extra, sub, (*path, key))
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
                self.coerce_params(node.get("items", {}), v, (*path, str(i)))
                for i, v in enumerate(items)
            ]
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ParamError(
                    ParamProblem(
                        name,
                        f"Invalid integer: {_abbreviate(str(value))}",
                        "parameter_invalid_integer",
                    )
                )
            if isinstance(value, str):
                text = value.strip()
                if not text.lstrip("-").isdigit():
                    raise ParamError(
                        ParamProblem(
                            name,
                            f"Invalid integer: {_abbreviate(value)}",
                            "parameter_invalid_integer",
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

    def _accepts_empty(self, schema: Mapping[str, Any]) -> bool:
        node = self.resolve(schema)
        if "" in node.get("enum", ()):
            return True
        return any(self._accepts_empty(alt) for alt in node.get("anyOf", ()))

    # --- OpenAPI 3.0 -> JSON Schema, for requests and answers ---------------------------------
    # `document` defaults to this description; a test passes a stricter copy of it.

    def json_schema(self, ref: str, document: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A JSON Schema (2020-12) for `ref` ("#/paths/..." or "#/components/schemas/customer").

        OpenAPI 3.0's `nullable` becomes an `anyOf` with null; `$ref`s keep pointing into the
        converted document, which rides along under `components`.
        """
        doc = document if document is not None else self.spec()
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": ref,
            **_converted(doc),
        }

    def response_schema_ref(
        self,
        path: str,
        method: str,
        status: int | str,
        document: Mapping[str, Any] | None = None,
    ) -> str:
        doc = document if document is not None else self.spec()
        responses = doc["paths"][path][method.lower()]["responses"]
        key = str(status) if str(status) in responses else "default"
        return _pointer(
            "paths", path, method.lower(), "responses", key, "content", "application/json", "schema"
        )

    def schema_problems(
        self, ref: str, instance: Any, document: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Every way `instance` breaks the schema at `ref`, as "path: message" lines."""
        from jsonschema import Draft202012Validator  # a test dependency; see the module note

        doc = document if document is not None else self.spec()
        key = (id(doc), ref)
        validator = _VALIDATORS.get(key)
        if validator is None:
            validator = _VALIDATORS[key] = Draft202012Validator(self.json_schema(ref, doc))
        return [
            f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in sorted(
                validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))
            )
        ]

    def response_problems(
        self,
        path: str,
        method: str,
        status: int,
        body: Any,
        document: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Check one answer against the description (status picks its entry, else default)."""
        ref = self.response_schema_ref(path, method, status, document)
        return self.schema_problems(ref, body, document)


def request_schema_ref(path: str, method: str) -> str:
    return _pointer("paths", path, method.lower(), "requestBody", "content", FORM, "schema")


def _abbreviate(value: str) -> str:
    # Stripe shortens long values in messages: "Invalid string: nnnnnnnnnn...nnnnnnnnnn"
    return value if len(value) <= 23 else f"{value[:10]}...{value[-10:]}"


def _param_name(path: tuple[str, ...]) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:]) if path else ""


def _one_of(values: list[Any]) -> str:
    shown = [str(v) for v in values if v != ""]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f", or {shown[-1]}"


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


_CONVERTED: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}
_VALIDATORS: dict[tuple[int, str], Any] = {}


def _converted(doc: Mapping[str, Any]) -> dict[str, Any]:
    # Converting 800 kB of description takes a while; keep one copy per document object.
    hit = _CONVERTED.get(id(doc))
    if hit is None or hit[0] is not doc:
        hit = (doc, _to_json_schema({"components": doc["components"], "paths": doc["paths"]}))
        _CONVERTED[id(doc)] = hit
    return hit[1]
