"""Request validation exactly as the contract states it (API.md 2.2, 2.3, 2.5); each failure names the field.

Two layers: the checks written out here (friendly messages, and what a schema cannot say: unique package ids,
exactly one of `data` / `data_url`, real dates, base64), then the request body's schema in Kombo's own OpenAPI
document (`docs/kombo/openapi-assessment.json`, `$ref`s resolved) for anything the first layer let through.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sandbox.common import parse_kombo_date

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "docs" / "kombo" / "openapi-assessment.json"
_OPENAPI_URI = "urn:kombo:openapi-assessment"

PACKAGE_TYPES = ("BEHAVIORAL", "VIDEO_INTERVIEW", "SKILLS_TEST", "BACKGROUND_CHECK", "REFERENCE_CHECK")
ORDER_STATUSES = ("OPEN", "COMPLETED", "CANCELLED", "REJECTED")
RESULT_STATUSES = ("COMPLETED", "CANCELLED", "OPEN")
SUB_RESULT_STATUSES = ("COMPLETED", "CANCELLED")
MAX_ATTACHMENTS = 5

_CONTENT_TYPE_RE = re.compile(r"^[\w.-]+\/[\w.-]+$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_STANDARD_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


class InputInvalid(ValueError):
    """The request breaks the contract; answered as PLATFORM.INPUT_INVALID."""


@lru_cache(maxsize=1)
def _openapi_registry() -> tuple[dict[str, Any], Registry]:
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return document, Registry().with_resource(_OPENAPI_URI, resource)


@cache
def request_body_validator(method: str, path: str) -> Draft202012Validator:
    """The validator of an operation's JSON request body, as Kombo's OpenAPI declares it (``path`` as written
    there, e.g. ``/assessment/orders/{assessment_order_id}/result``)."""
    document, registry = _openapi_registry()
    operation = document["paths"][path][method.lower()]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = {"$ref": _OPENAPI_URI + schema["$ref"]}
    return Draft202012Validator(schema, registry=registry)


def _json_path(parts: Any) -> str:
    where = ""
    for part in parts:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where


def _most_telling(error: ValidationError) -> ValidationError:
    """For a value that fits none of ``anyOf``'s forms, the error inside the one form its ``const`` (the
    ``type`` discriminator) picked, if exactly one; otherwise the ``anyOf`` error itself."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        picked = [errors for errors in branches.values() if not any(e.validator == "const" for e in errors)]
        if len(picked) != 1:
            break
        error = best_match(picked[0]) or error
    return error


def validate_against_openapi(body: Any, method: str, path: str) -> None:
    """Raise `InputInvalid` naming the field when ``body`` breaks the operation's schema in Kombo's OpenAPI."""
    errors = sorted(request_body_validator(method, path).iter_errors(body), key=relevance)
    if not errors:
        return
    error = _most_telling(errors[0])
    where = _json_path(error.absolute_path)
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    subject = f"`{where}`" if where else "The request body"
    raise InputInvalid(f"{subject} does not match Kombo's schema: {message}")


def is_uri(value: Any) -> bool:
    """An absolute URI (`format: uri`): a scheme and something after it, no whitespace."""
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        return False
    parts = urlsplit(value)
    if not parts.scheme or not _SCHEME_RE.match(parts.scheme):
        return False
    if parts.scheme in ("http", "https"):
        return bool(parts.netloc) and bool(parts.hostname)
    return bool(parts.netloc or parts.path)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def validate_packages(body: Any) -> list[dict[str, str]]:
    """Validate a `PUT /assessment/packages` body; returns the packages."""
    if not isinstance(body, dict):
        raise InputInvalid("The request body must be a JSON object.")
    packages = body.get("packages")
    if not isinstance(packages, list):
        raise InputInvalid("`packages` is required and must be an array.")
    seen: set[str] = set()
    cleaned: list[dict[str, str]] = []
    for index, package in enumerate(packages):
        where = f"packages[{index}]"
        if not isinstance(package, dict):
            raise InputInvalid(f"`{where}` must be an object.")
        for key in ("id", "name", "description"):
            if key not in package:
                raise InputInvalid(f"`{where}.{key}` is required.")
            if not _non_empty_string(package[key]):
                raise InputInvalid(f"`{where}.{key}` must be a non-empty string.")
        if package.get("type") not in PACKAGE_TYPES:
            raise InputInvalid(f"`{where}.type` must be one of {', '.join(PACKAGE_TYPES)}.")
        if package["id"] in seen:
            raise InputInvalid(
                f"`{where}.id` duplicates the package id {package['id']!r}; ids must be unique."
            )
        seen.add(package["id"])
        cleaned.append({key: package[key] for key in ("id", "type", "name", "description")})
    validate_against_openapi(body, "PUT", "/assessment/packages")
    return cleaned


def parse_statuses(raw: str | None) -> set[str] | None:
    if raw is None or raw.strip() == "":
        return None
    statuses = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = sorted(statuses - set(ORDER_STATUSES))
    if unknown:
        raise InputInvalid(
            f"`statuses` contains unknown values {', '.join(unknown)}; allowed: {', '.join(ORDER_STATUSES)}."
        )
    return statuses


def parse_ids(raw: str | None) -> list[str] | None:
    if raw is None or raw.strip() == "":
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_page_size(raw: str | None) -> int:
    if raw is None:
        return 100
    try:
        page_size = int(raw)
    except ValueError:
        raise InputInvalid("`page_size` must be an integer between 1 and 250.") from None
    if not 1 <= page_size <= 250:
        raise InputInvalid("`page_size` must be an integer between 1 and 250.")
    return page_size


def _validate_attribute(index: int, attribute: Any) -> None:
    where = f"attributes[{index}]"
    if not isinstance(attribute, dict):
        raise InputInvalid(f"`{where}` must be an object.")
    kind = attribute.get("type")
    if kind == "TEXT":
        for key in ("label", "value"):
            if not isinstance(attribute.get(key), str):
                raise InputInvalid(f"`{where}.{key}` is required for TEXT attributes and must be a string.")
    elif kind == "SUB_RESULT":
        for key in ("id", "label"):
            if not isinstance(attribute.get(key), str):
                raise InputInvalid(
                    f"`{where}.{key}` is required for SUB_RESULT attributes and must be a string."
                )
        score = attribute.get("score")
        if not isinstance(score, dict):
            raise InputInvalid(
                f"`{where}.score` is required for SUB_RESULT attributes and must be an object."
            )
        if not _is_number(score.get("value")):
            raise InputInvalid(f"`{where}.score.value` is required and must be a number.")
        if not _is_number(score.get("max")):
            raise InputInvalid(f"`{where}.score.max` is required and must be a number.")
        if score["max"] < 1:
            raise InputInvalid(f"`{where}.score.max` must be greater than or equal to 1.")
        if attribute.get("status") not in SUB_RESULT_STATUSES:
            raise InputInvalid(f"`{where}.status` must be one of {', '.join(SUB_RESULT_STATUSES)}.")
    else:
        raise InputInvalid(f"`{where}.type` must be TEXT or SUB_RESULT.")


def _validate_attachment(index: int, attachment: Any) -> None:
    where = f"attachments[{index}]"
    if not isinstance(attachment, dict):
        raise InputInvalid(f"`{where}` must be an object.")
    if not _non_empty_string(attachment.get("name")):
        raise InputInvalid(f"`{where}.name` is required and must be a non-empty string.")
    has_data = attachment.get("data") is not None
    has_url = attachment.get("data_url") is not None
    if has_data == has_url:
        raise InputInvalid(f"`{where}` must have exactly one of `data` or `data_url`.")
    content_type = attachment.get("content_type")
    if content_type is not None and (
        not isinstance(content_type, str) or not _CONTENT_TYPE_RE.match(content_type)
    ):
        raise InputInvalid(f"`{where}.content_type` must look like `type/subtype`.")
    if has_data:
        data = attachment["data"]
        if content_type is None:
            raise InputInvalid(f"`{where}.content_type` is required when `data` is used.")
        if not isinstance(data, str) or len(data) % 4 != 0 or not _STANDARD_BASE64_RE.match(data):
            raise InputInvalid(f"`{where}.data` must be standard base64 (alphabet `+/`, padded).")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InputInvalid(f"`{where}.data` must be standard base64 (alphabet `+/`, padded).") from None
    elif not is_uri(attachment["data_url"]):
        raise InputInvalid(f"`{where}.data_url` must be a URI.")


def validate_result(body: Any) -> list[str]:
    """Validate a `PUT /assessment/orders/{id}/result` body; returns interaction warnings."""
    if not isinstance(body, dict):
        raise InputInvalid("The request body must be a JSON object.")
    if "status" not in body:
        raise InputInvalid("`status` is required.")
    if body["status"] not in RESULT_STATUSES:
        raise InputInvalid(f"`status` must be one of {', '.join(RESULT_STATUSES)}.")
    if "result_url" not in body:
        raise InputInvalid("`result_url` is required.")
    if not is_uri(body["result_url"]):
        raise InputInvalid("`result_url` must be a URI.")
    if "completed_at" in body and parse_kombo_date(body["completed_at"]) is None:
        raise InputInvalid("`completed_at` must be a date-time like `YYYY-MM-DDTHH:mm:ss.sssZ`.")
    for key in ("score", "max_score"):
        if key in body and not _is_number(body[key]):
            raise InputInvalid(f"`{key}` must be a number.")
    attributes = body.get("attributes", [])
    if not isinstance(attributes, list):
        raise InputInvalid("`attributes` must be an array.")
    for index, attribute in enumerate(attributes):
        _validate_attribute(index, attribute)
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list):
        raise InputInvalid("`attachments` must be an array.")
    if len(attachments) > MAX_ATTACHMENTS:
        raise InputInvalid(f"`attachments` may hold at most {MAX_ATTACHMENTS} items.")
    for index, attachment in enumerate(attachments):
        _validate_attachment(index, attachment)
    if "remote_fields" in body and not isinstance(body["remote_fields"], dict):
        raise InputInvalid("`remote_fields` must be an object.")
    validate_against_openapi(body, "PUT", "/assessment/orders/{assessment_order_id}/result")
    warnings = []
    if body["status"] in ("COMPLETED", "CANCELLED") and "completed_at" not in body:
        warnings.append("`completed_at` should be provided when `status` is COMPLETED or CANCELLED.")
    return warnings
