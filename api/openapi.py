"""OpenAPI 3.1, generated from the route table and the pydantic request models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from api.auth import RELAY_PREFIXES
from api.routes import Route

_PROBLEM = {
    "description": "problem",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _register(
    schemas: dict[str, Any], model: type[BaseModel], mode: JsonSchemaMode
) -> dict[str, str]:
    """Put `model` (and the models it uses) into the components; a $ref to it."""
    name = model.__name__
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    for sub_name, sub in schema.pop("$defs", {}).items():
        schemas[sub_name] = sub
    schemas[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(r: Route) -> dict[int, str]:
    """The problems every route of this shape can answer, beside those it declares itself."""
    out: dict[int, str] = {}
    if any(p.where != "path" for p in r.params) or r.body is not None:
        out[400] = "a parameter or the body is malformed (the problem names it)"
    if any(p.where == "path" for p in r.params):
        out[404] = "no such resource, or outside your region scope"
    if r.path.startswith(RELAY_PREFIXES):
        out[401] = "not a relay: the relay's secret is missing or wrong"
    if r.roles is not None:
        out[401] = "no valid bearer token"
        out[403] = "the token's role may not do this"
        out[429] = "the token's rate limit is spent (see Retry-After)"
    if r.body is not None or r.body_content != "application/json":
        out[413] = "the body is too large"
        out[422] = "the body has invalid fields (the problem names each)"
    return out


def build_spec(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                            "row": {"type": "integer"},
                        },
                    },
                },
            },
        }
    }
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "tags": [r.tag],
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "description": p.description,
                    "required": p.required or p.where == "path",
                    "schema": p.schema,
                }
                for p in r.params
            ],
            "responses": {
                str(code): {**_PROBLEM, "description": text}
                if code >= 400
                else {"description": text}
                for code, text in r.responses.items()
            },
        }
        for code, why in _errors(r).items():
            op["responses"].setdefault(str(code), {**_PROBLEM, "description": why})
        if r.roles is not None:
            op["security"] = [{"bearer": []}]
            op["x-roles"] = [role.value for role in r.roles]
        else:
            op["security"] = []
        if r.returns is not None:
            ref = _register(schemas, r.returns, "serialization")
            for code, resp in op["responses"].items():
                if code.startswith("2") and code != "204":
                    resp["content"] = {"application/json": {"schema": ref}}
        if r.body is not None:
            name = r.body.__name__
            _register(schemas, r.body, "validation")
            op["requestBody"] = {
                "required": True,
                "content": {r.body_content: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
            }
        elif r.body_content != "application/json":
            op["requestBody"] = {
                "required": True,
                "content": {
                    r.body_content: {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    }
                },
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "camera-registry",
            "version": "1",
            "description": "雪亮工程 camera registry and video-integration service",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
