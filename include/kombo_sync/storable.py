"""What no database, JSON document or HTTP body of ours can hold: one answer for every input the pipeline reads.

A NUL character cannot be stored in a PostgreSQL text column, a lone surrogate cannot be encoded as UTF-8 (so
neither stored nor sent), and JSON nested absurdly deep exhausts the stack of whoever reads it next. The webhook
answers 400 for such values, the warehouse readers quarantine the row, the settings loader names the key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

MAX_JSON_DEPTH = 64
MAX_JSON_VALUES = 1_000_000


def text_problem(text: str) -> str | None:
    """Why this text cannot be stored or sent, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate"
    return None


def json_problem(
    payload: Any, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES
) -> tuple[str, str] | None:
    """The first value of a JSON-like document that cannot be stored, as (dotted path, reason), or None.

    Counts values as they are reached, so a YAML alias bomb (a few lines that expand to billions) is refused."""
    stack: list[tuple[Any, str, int]] = [(payload, "", 0)]
    seen = 0
    while stack:
        value, path, depth = stack.pop()
        seen += 1
        if seen > max_values:
            return "", f"holds more than {max_values} values"
        if depth > max_depth:
            return ".".join(path.split(".")[:3]) + "...", f"nested deeper than {max_depth} levels"
        if isinstance(value, str):
            reason = text_problem(value)
            if reason:
                return path, reason
        elif isinstance(value, dict):
            for key, item in value.items():
                reason = text_problem(key) if isinstance(key, str) else None
                child = f"{path}.{key}" if path else str(key)
                if reason:
                    return (path or "$"), f"a key {reason}"
                stack.append((item, child, depth + 1))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                stack.append((item, f"{path}.{index}" if path else str(index), depth + 1))
    return None


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number is too large")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json_text(text: str | bytes) -> Any:
    """``json.loads`` whose every failure is a ValueError with a plain reason: not UTF-8, not JSON, NaN or a
    number too large for a float, nested too deeply, or a value `json_problem` finds."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json(value)
    return value


def check_json(value: Any) -> None:
    """Raise ValueError naming the first value `json_problem` finds."""
    problem = json_problem(value)
    if problem is not None:
        path, reason = problem
        raise ValueError(f"{path or 'the value'} {reason}" if path else reason)


def storable_text(text: str) -> str:
    """The text with what cannot be stored spelled out (NUL as ``\\x00``, a lone surrogate as ``\\ud800``)."""
    if text_problem(text) is None:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def cell_problem(value: Any) -> str | None:
    """Why a warehouse cell cannot be read as text or JSON: undecodable bytes, NUL, lone surrogates, absurd
    nesting; None for anything else (including values of other types, which the contract checks itself)."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, list | dict):
        problem = json_problem(value)
        return None if problem is None else (f"{problem[0]}: {problem[1]}" if problem[0] else problem[1])
    return None


def read_yaml_file(path: Path) -> Any:
    """A YAML file's document (``yaml.safe_load``), every failure a ValueError with a plain reason."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise ValueError("not valid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ValueError(f"not valid YAML: {exc}") from None
    problem = json_problem(document)
    if problem is not None:
        path_in_file, reason = problem
        raise ValueError(f"{path_in_file}: {reason}" if path_in_file else reason)
    return document
