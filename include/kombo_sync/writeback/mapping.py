"""Warehouse result rows -> Kombo ``ResultPayload`` (API.md 2.5), vectorised with pandas, validated with pydantic.

The scalar columns (status, scores, timestamps, URLs) are checked and converted a whole chunk at a time; the
JSON columns and report bytes need one small Python step per row. Every row then goes through
``ResultPayload`` so what is enqueued is exactly what the client would send. A row that breaks the contract is
returned as a ``Rejection`` with its reason (the caller quarantines it) and the rest of the chunk goes on.

Over 400 lines on purpose: the results' column contract, one rule per column, reads in one place.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import mimetypes
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from pydantic import ValidationError

from kombo_sync.kombo.models import (
    ATTRIBUTE_TYPE_SUB_RESULT,
    ATTRIBUTE_TYPE_TEXT,
    RESULT_STATUS_CANCELLED,
    RESULT_STATUS_COMPLETED,
    ResultPayload,
)
from kombo_sync.storable import cell_problem, load_json_text, storable_text

# The columns the results query must return (one of the two id columns) and the optional ones.
ID_COLUMNS = ("order_id", "invitation_id")
REQUIRED_COLUMNS = ("status", "result_url", "updated_at")
OPTIONAL_COLUMNS = (
    "integration_id",
    "score",
    "max_score",
    "completed_at",
    "report_url",
    "report_bytes",
    "report_name",
    "report_content_type",
    "sub_results",
    "attributes",
)

_STATUS_ALIASES = {
    "COMPLETED": RESULT_STATUS_COMPLETED,
    "COMPLETE": RESULT_STATUS_COMPLETED,
    "CANCELLED": RESULT_STATUS_CANCELLED,
    "CANCELED": RESULT_STATUS_CANCELLED,
}
_HTTPS_URL = r"^https://[^\s/?#@]+(?:[/?#][^\s]*)?$"
_HTTP_HOST = r"^http://([^\s/?#@:]+)(?::\d+)?(?:[/?#][^\s]*)?$"
_CONTENT_TYPE = re.compile(r"^[\w.-]+/[\w.-]+$")
_DEFAULT_REPORT_NAME = "assessment-report"
MAX_ID_CHARS = 255
_EARLIEST_TIME = pd.Timestamp("1900-01-01", tz="UTC")

ReportFetcher = Callable[[str, int], tuple[bytes, str | None]]
"""Fetch a report URL (at most ``limit`` bytes): returns the bytes and the Content-Type, raises on failure."""


class ContractError(ValueError):
    """The results query does not return the documented columns (the whole run stops with this message)."""


@dataclass(frozen=True)
class Rejection:
    """A row that breaks the contract: quarantined with its reason, never sent."""

    source_key: str | None
    reason: str
    row: dict[str, Any]


@dataclass
class MappedChunk:
    """One chunk mapped: ``results`` has order_id, integration_id, payload, payload_hash, source_updated_at."""

    results: pd.DataFrame
    rejections: list[Rejection] = field(default_factory=list)


def canonical_json(payload: Mapping[str, Any]) -> str:
    """The payload as canonical JSON (sorted keys, no spaces, UTF-8): equal payloads give equal text."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_hash(payload: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON: the outbox key, with the order id, of what was sent."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def check_columns(columns: Any) -> None:
    """Raise ``ContractError`` naming what is missing when the query breaks the column contract."""
    present = set(columns)
    problems = []
    if not present & set(ID_COLUMNS):
        problems.append("one of order_id or invitation_id")
    problems.extend(name for name in REQUIRED_COLUMNS if name not in present)
    if problems:
        raise ContractError(
            "the results query must return the column(s) "
            + ", ".join(problems)
            + f" (it returned: {', '.join(sorted(present)) or 'nothing'}); see docs/writeback.md"
        )


def _blank(series: pd.Series) -> pd.Series:
    """True where a value is missing or an empty / whitespace-only string."""
    missing = series.isna()
    as_text = series.astype("string").str.strip()
    return missing | (as_text == "").fillna(True)


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string").str.strip()


def _timestamps(series: pd.Series) -> pd.Series:
    """UTC timestamps from datetimes or ISO-8601 text (SQLite returns text); unparseable values become NaT."""
    if pd.api.types.is_datetime64_any_dtype(series):
        parsed = pd.to_datetime(series, utc=True)
    else:
        parsed = pd.to_datetime(series.astype("string"), utc=True, errors="coerce", format="ISO8601")
    # Kombo's date-times have four-digit years; a year 999 or 0001 is a broken value, not a date.
    return parsed.where(parsed >= _EARLIEST_TIME)


def _kombo_timestamps(series: pd.Series) -> pd.Series:
    """``YYYY-MM-DDTHH:mm:ss.sssZ`` text for each timestamp (Kombo's precision is the millisecond)."""
    floored = series.dt.floor("ms")
    return floored.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, 23) + "Z"


def _numbers(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype("float64")


def _values(series: pd.Series) -> list[Any]:
    """The column as a Python list with every kind of missing value (NaN, NA, NaT) as None."""
    return [None if _is_missing(value) else value for value in series.tolist()]


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype="object")


class _Reasons:
    """The first contract violation of each row (later checks do not overwrite an earlier reason)."""

    def __init__(self, index: pd.Index) -> None:
        self.reasons = pd.Series(pd.NA, index=index, dtype="string")

    def flag(self, mask: pd.Series, reason: str | pd.Series) -> None:
        mask = mask.fillna(False).astype(bool) & self.reasons.isna()
        if not mask.any():
            return
        if isinstance(reason, pd.Series):
            self.reasons[mask] = reason[mask].astype("string")
        else:
            self.reasons[mask] = reason

    def flag_rows(self, reasons: Mapping[Any, str]) -> None:
        for index, reason in reasons.items():
            if pd.isna(self.reasons.at[index]):
                self.reasons.at[index] = reason

    @property
    def ok(self) -> pd.Series:
        return self.reasons.isna()


def _is_missing(value: Any) -> bool:
    return (
        value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))
    )


def _parse_json(value: Any) -> Any:
    if _is_missing(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        return None if not text else load_json_text(text)
    if isinstance(value, bytes | bytearray | memoryview):
        return load_json_text(bytes(value))
    return value


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sub_results(value: Any) -> list[dict[str, Any]]:
    """SUB_RESULT attributes from the ``sub_results`` JSON: [{id, label, score, max, status}]; raises ValueError.

    A cancelled sub-test without a score is left out (Kombo requires a score on every SUB_RESULT)."""
    parsed = _parse_json(value)
    if parsed is None:
        return []
    if not isinstance(parsed, list):
        raise ValueError("sub_results must be a JSON array of objects")
    attributes = []
    for position, item in enumerate(parsed):
        where = f"sub_results[{position}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object")
        sub_id = item.get("id")
        label = item.get("label", item.get("name"))
        if sub_id is None or str(sub_id).strip() == "":
            raise ValueError(f"{where}.id is required")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{where}.label is required")
        score = _finite_number(item.get("score"))
        maximum = _finite_number(item.get("max", item.get("max_score")))
        status = _STATUS_ALIASES.get(str(item.get("status") or RESULT_STATUS_COMPLETED).strip().upper())
        if status is None:
            raise ValueError(f"{where}.status must be completed or cancelled")
        if status == RESULT_STATUS_CANCELLED and item.get("score") is None:
            continue  # a sub-test never taken has no score, and Kombo's SUB_RESULT needs one: left out
        if score is None or maximum is None:
            raise ValueError(f"{where} needs numeric score and max")
        if maximum < 1:
            raise ValueError(f"{where}.max must be at least 1 (Kombo's rule), got {maximum:g}")
        if not 0 <= score <= maximum:
            raise ValueError(f"{where}.score {score:g} is outside [0, {maximum:g}]")
        attributes.append(
            {
                "type": ATTRIBUTE_TYPE_SUB_RESULT,
                "id": str(sub_id),
                "label": label.strip(),
                "score": {"value": score, "max": maximum},
                "status": status,
            }
        )
    return attributes


def _text_attributes(value: Any) -> list[dict[str, Any]]:
    """TEXT attributes from ``attributes`` JSON: [{label, value}] or {label: value}; raises ValueError."""
    parsed = _parse_json(value)
    if parsed is None:
        return []
    if isinstance(parsed, dict):
        pairs = list(parsed.items())
    elif isinstance(parsed, list):
        pairs = []
        for position, item in enumerate(parsed):
            if not isinstance(item, dict) or "label" not in item:
                raise ValueError(f"attributes[{position}] must be an object with label and value")
            pairs.append((item["label"], item.get("value")))
    else:
        raise ValueError("attributes must be a JSON array of {label, value} or an object")
    attributes = []
    for label, raw in pairs:
        if not isinstance(label, str) or not label.strip():
            raise ValueError("every attribute needs a non-empty label")
        if raw is None:
            continue  # nothing to show in the ATS
        if isinstance(raw, dict | list):
            raise ValueError(f"attribute {label!r} must be text or a number, not a nested object")
        if isinstance(raw, bool):
            text = "Yes" if raw else "No"
        elif isinstance(raw, float) and raw.is_integer():
            text = str(int(raw))
        else:
            text = str(raw)
        attributes.append({"type": ATTRIBUTE_TYPE_TEXT, "label": label.strip(), "value": text})
    return attributes


def _report_bytes(value: Any) -> bytes:
    """The report file: binary columns as they are, text taken as standard base64 (raises ValueError)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value.strip(), validate=True)
        except ValueError as exc:
            raise ValueError("report_bytes given as text must be standard base64") from exc
    raise ValueError(f"report_bytes must be binary, got {type(value).__name__}")


def _report_name(name: Any, url: Any, content_type: str | None) -> str:
    if isinstance(name, str) and name.strip():
        return name.strip()
    if isinstance(url, str) and url:
        base = posixpath.basename(urlsplit(url).path)
        if base and "." in base:
            return base
    extension = mimetypes.guess_extension(content_type or "") or ".pdf"
    return _DEFAULT_REPORT_NAME + extension


def _content_type(declared: Any, name: str) -> str | None:
    if isinstance(declared, str) and declared.strip():
        return declared.strip().split(";", 1)[0].strip().lower()
    guessed, _ = mimetypes.guess_type(name)
    return guessed


def _attachment(
    url: Any,
    https: bool,
    raw: Any,
    name: Any,
    declared_type: Any,
    max_bytes: int,
    fetch_report: ReportFetcher | None,
) -> list[dict[str, Any]]:
    """Zero or one attachment for a row: a ``data_url`` for HTTPS reports, else base64 ``data``."""
    has_url = isinstance(url, str) and url.strip() != ""
    has_bytes = not _is_missing(raw)
    if not has_url and not has_bytes:
        return []
    if has_url and https:
        file_name = _report_name(name, url, None)
        attachment: dict[str, Any] = {"name": file_name, "data_url": url.strip()}
        content_type = _content_type(declared_type, file_name)
        if content_type and _CONTENT_TYPE.match(content_type):
            attachment["content_type"] = content_type
        return [attachment]
    fetched_type: str | None = None
    if has_bytes:
        data = _report_bytes(raw)
    elif fetch_report is not None:
        data, fetched_type = fetch_report(url.strip(), max_bytes)
    else:
        raise ValueError(
            "report_url must be https:// (Kombo downloads it without credentials); "
            "return report_bytes instead or enable writeback.fetch_report_urls"
        )
    if len(data) > max_bytes:
        raise ValueError(
            f"report is {len(data)} bytes, over writeback.max_attachment_bytes ({max_bytes}); "
            "return an https report_url instead"
        )
    if not data:
        raise ValueError("report_bytes is empty")
    file_name = _report_name(name, url if has_url else None, _content_type(declared_type, "") or fetched_type)
    content_type = _content_type(declared_type, file_name) or _content_type(fetched_type, file_name)
    if not content_type or not _CONTENT_TYPE.match(content_type):
        raise ValueError("report_content_type (type/subtype) is needed to send report bytes")
    return [{"name": file_name, "content_type": content_type, "data": base64.b64encode(data).decode("ascii")}]


def _secure_urls(urls: pd.Series, insecure_hosts: Sequence[str]) -> pd.Series:
    """True for https:// URLs, and for http:// URLs on the hosts explicitly allowed (a local sandbox)."""
    secure = urls.str.match(_HTTPS_URL).fillna(False).astype(bool)
    if insecure_hosts:
        hosts = urls.str.extract(_HTTP_HOST, expand=False).str.lower()
        secure |= hosts.isin([host.lower() for host in insecure_hosts]).fillna(False).astype(bool)
    return secure


def _unreadable_cells(frame: pd.DataFrame, reasons: _Reasons) -> pd.DataFrame:
    """Reject rows with a cell no database or JSON body can hold (undecodable bytes, NUL, lone surrogates,
    absurd nesting), naming the column; those cells become storable text so nothing later trips over them."""
    cleaned: dict[str, pd.Series] = {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object and not pd.api.types.is_string_dtype(values.dtype):
            continue  # numbers and timestamps hold no text
        bad: dict[Any, str] = {}
        replaced: dict[Any, Any] = {}
        for index, value in values.items():
            if isinstance(value, bytes | bytearray | memoryview):
                if column == "report_bytes":
                    continue  # binary by contract
                try:
                    replaced[index] = bytes(value).decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad[index] = f"{column} is not UTF-8 text (byte {exc.start})"
                    replaced[index] = bytes(value).decode("utf-8", "backslashreplace")
                    continue
                value = replaced[index]
            problem = cell_problem(value)
            if problem is not None:
                bad[index] = f"{column} {problem}"
                replaced[index] = storable_text(value) if isinstance(value, str) else f"<{problem}>"
        if replaced:
            reasons.flag_rows(bad)
            values = values.copy()
            for index, value in replaced.items():
                values.at[index] = value
            cleaned[column] = values
    return frame.assign(**cleaned) if cleaned else frame


def _per_row(values: pd.Series, convert: Callable[[Any], Any], column: str, reasons: _Reasons) -> pd.Series:
    """Apply ``convert`` to each value of rows still valid; a ValueError becomes that row's reason."""
    out: dict[Any, Any] = {}
    bad: dict[Any, str] = {}
    for index, value in values[reasons.ok].items():
        try:
            out[index] = convert(value)
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            bad[index] = f"{column}: {exc}"
    reasons.flag_rows(bad)
    return pd.Series(out, dtype="object").reindex(values.index)


def _safe_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row for the quarantine table: JSON-safe, report bytes replaced by their size."""
    safe: dict[str, Any] = {}
    for key, value in row.items():
        if key == "report_bytes" and not _is_missing(value):
            size = len(value) if hasattr(value, "__len__") else None
            safe[key] = f"<{size} bytes>"
        elif _is_missing(value):
            safe[key] = None
        elif isinstance(value, pd.Timestamp):
            safe[key] = value.isoformat()
        elif isinstance(value, np.generic):
            safe[key] = value.item()
        elif isinstance(value, str | int | float | bool | list | dict):
            safe[key] = value
        else:
            safe[key] = str(value)
    return safe


def _first_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"


def map_results(
    frame: pd.DataFrame,
    *,
    max_attachment_bytes: int = 5_000_000,
    fetch_report: ReportFetcher | None = None,
    insecure_url_hosts: Sequence[str] = (),
) -> MappedChunk:
    """Map a chunk of result rows (with ``order_id`` and ``integration_id`` resolved) to Kombo payloads.

    Rows with a missing order or integration id, a status other than completed/cancelled, a non-HTTPS
    result URL (``insecure_url_hosts`` lists hosts whose plain http:// is accepted, e.g. a local sandbox), a score outside [0, max_score], bad JSON or an unsendable report are rejected with the reason.
    When an order appears twice in the chunk, the row with the latest ``updated_at`` wins.
    """
    check_columns(frame.columns)
    frame = frame.reset_index(drop=True)
    reasons = _Reasons(frame.index)
    frame = _unreadable_cells(frame, reasons)

    order_id = _text(_column(frame, "order_id"))
    integration_id = _text(_column(frame, "integration_id"))
    reasons.flag(_blank(order_id), "order_id is missing (no Kombo order for this result)")
    reasons.flag(_blank(integration_id), "integration_id is unknown: the order is not in the state store")
    # The outbox's id columns hold 255 characters (PostgreSQL refused the whole chunk's insert).
    reasons.flag(order_id.str.len() > MAX_ID_CHARS, f"order_id is longer than {MAX_ID_CHARS} characters")
    reasons.flag(
        integration_id.str.len() > MAX_ID_CHARS, f"integration_id is longer than {MAX_ID_CHARS} characters"
    )

    raw_status = _text(frame["status"]).str.upper()
    status = raw_status.map(_STATUS_ALIASES)
    reasons.flag(
        status.isna(),
        "status must be completed or cancelled, got " + raw_status.fillna("nothing").astype(str),
    )

    result_url = _text(frame["result_url"])
    reasons.flag(_blank(result_url), "result_url is missing (Kombo requires it)")
    reasons.flag(~_secure_urls(result_url, insecure_url_hosts), "result_url must be an https:// URL")

    updated_raw = _column(frame, "updated_at")
    updated_at = _timestamps(updated_raw)
    reasons.flag(
        updated_raw.notna() & updated_at.isna(), "updated_at is not a timestamp (ISO 8601, from year 1900)"
    )
    completed_raw = _column(frame, "completed_at")
    completed_at = _timestamps(completed_raw)
    reasons.flag(
        completed_raw.notna() & completed_at.isna(),
        "completed_at is not a timestamp (ISO 8601, from year 1900)",
    )
    # Kombo asks for completed_at with every COMPLETED or CANCELLED result; the row's update time stands in.
    completed_at = completed_at.fillna(updated_at)
    reasons.flag(completed_at.isna(), "completed_at is missing and updated_at cannot stand in for it")

    score_raw, max_raw = _column(frame, "score"), _column(frame, "max_score")
    score, max_score = _numbers(score_raw), _numbers(max_raw)
    reasons.flag(score_raw.notna() & ~np.isfinite(score), "score is not a finite number")
    reasons.flag(max_raw.notna() & ~np.isfinite(max_score), "max_score is not a finite number")
    reasons.flag(max_score <= 0, "max_score must be greater than 0")
    reasons.flag(score < 0, "score must not be negative")
    reasons.flag(
        score > max_score,
        "score " + score.astype(str) + " is above max_score " + max_score.astype(str),
    )

    sub_results = _per_row(_column(frame, "sub_results"), _sub_results, "sub_results", reasons)
    text_attributes = _per_row(_column(frame, "attributes"), _text_attributes, "attributes", reasons)

    report_url = _values(_text(_column(frame, "report_url")))
    report_https = _secure_urls(_text(_column(frame, "report_url")), insecure_url_hosts).tolist()
    report_bytes = _values(_column(frame, "report_bytes"))
    report_name = _values(_column(frame, "report_name"))
    report_type = _values(_column(frame, "report_content_type"))
    attachments: dict[int, list[dict[str, Any]]] = {}
    bad_reports: dict[Any, str] = {}
    for position in np.flatnonzero(reasons.ok.to_numpy()).tolist():
        try:
            attachments[position] = _attachment(
                report_url[position],
                bool(report_https[position]),
                report_bytes[position],
                report_name[position],
                report_type[position],
                max_attachment_bytes,
                fetch_report,
            )
        except Exception as exc:  # a fetch may fail in many ways; each is this row's reason
            bad_reports[frame.index[position]] = f"report: {exc}"
    reasons.flag_rows(bad_reports)

    # Plain lists from here on: one row at a time through pandas indexing would cost more than the mapping.
    keys = _values(order_id)
    integrations = _values(integration_id)
    statuses, urls = _values(status), _values(result_url)
    completed_text = _values(_kombo_timestamps(completed_at))
    scores, max_scores = score.tolist(), max_score.tolist()
    texts, subs = text_attributes.tolist(), sub_results.tolist()
    updated = list(updated_at)
    records: list[dict[str, Any]] = []
    invalid: dict[Any, str] = {}
    for position in np.flatnonzero(reasons.ok.to_numpy()).tolist():
        payload: dict[str, Any] = {
            "status": statuses[position],
            "result_url": urls[position],
            "completed_at": completed_text[position],
            "attributes": texts[position] + subs[position],
            "attachments": attachments[position],
        }
        if not math.isnan(scores[position]):
            payload["score"] = scores[position]
        if not math.isnan(max_scores[position]):
            payload["max_score"] = max_scores[position]
        try:
            wire = ResultPayload.model_validate(payload).to_wire()
        except ValidationError as exc:
            invalid[frame.index[position]] = f"payload invalid: {_first_validation_error(exc)}"
            continue
        records.append(
            {
                "order_id": str(keys[position]),
                "integration_id": str(integrations[position]),
                "payload": wire,
                "payload_hash": payload_hash(wire),
                "source_updated_at": None if pd.isna(updated[position]) else updated[position],
            }
        )
    reasons.flag_rows(invalid)

    rejections: list[Rejection] = []
    for position in np.flatnonzero(~reasons.ok.to_numpy()).tolist():
        key = keys[position]
        rejections.append(
            Rejection(
                None if key is None else str(key),
                str(reasons.reasons.iat[position]),
                _safe_row(frame.iloc[position].to_dict()),
            )
        )

    results = pd.DataFrame.from_records(
        records, columns=["order_id", "integration_id", "payload", "payload_hash", "source_updated_at"]
    )
    if len(results):
        # The same order twice in one chunk: only its latest version is a candidate to send.
        results = results.sort_values("source_updated_at", kind="stable", na_position="first")
        results = results.drop_duplicates("order_id", keep="last").reset_index(drop=True)
    return MappedChunk(results=results, rejections=rejections)
