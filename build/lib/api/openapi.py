"""OpenAPI 3.1, generated from the route table and the pydantic request models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.routes import Route

_PROBLEM = {
    "description": "problem",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


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
            "responses": {str(code): {"description": text} for code, text in r.responses.items()},
        }
        if r.roles is not None:
            op["security"] = [{"bearer": []}]
            op["x-roles"] = [role.value for role in r.roles]
            op["responses"].setdefault("401", _PROBLEM)
            op["responses"].setdefault("403", _PROBLEM)
        else:
            op["security"] = []
        if r.body is not None:
            name = r.body.__name__
            schemas[name] = r.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for sub_name, sub in schemas[name].pop("$defs", {}).items():
                schemas[sub_name] = sub
            op["requestBody"] = {
                "required": True,
                "content": {r.body_content: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
            }
            op["responses"].setdefault("400", _PROBLEM)
            op["responses"].setdefault("422", _PROBLEM)
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
