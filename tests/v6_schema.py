"""Grafana's v6 OpenAPI document (a copy in tests/data) as JSON Schema validators.

The document is OpenAPI 3.1, whose schemas are JSON Schema 2020-12: `jsonschema` checks
an answer against the schema the document declares for that path, method and status,
formats (date-time, email) included.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "data" / "v6-openapi.yaml"
_URN = "urn:grafana:k6:v6"


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_URN, resource)
    return registry


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        found: Any = spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        node = found
    return node


def response_schema(template: str, status: int, method: str = "get") -> dict[str, Any]:
    """The JSON schema of the answer `status` to `method template` (a path of the spec)."""
    responses = spec()["paths"][template][method]["responses"]
    response = _resolve(responses[str(status)])
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def validate(template: str, status: int, body: Any, method: str = "get") -> None:
    """Raise jsonschema's ValidationError unless `body` fits the declared answer."""
    schema = response_schema(template, status, method)
    if "$ref" in schema:
        schema = {"$ref": _URN + schema["$ref"]}
    validator = Draft202012Validator(
        schema, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(body)
