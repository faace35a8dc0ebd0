"""What the databases can store: text and JSON from a request are checked before an INSERT.

PostgreSQL refuses NUL in text and in JSONB, and NaN/Infinity in JSONB; neither database nor
driver stores a lone surrogate (which a JSON ``\\ud800`` escape can carry). Free-form JSON is
also bounded in size and depth, so storing and serialising it never fails half-way.
"""

from __future__ import annotations

import json
from typing import Any

from agenthub.core.errors import ValidationFailed

JSON_MAX_BYTES = 16 * 1024
JSON_MAX_DEPTH = 32


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored, or ``None``."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def json_problem(
    value: Any, *, max_bytes: int = JSON_MAX_BYTES, max_depth: int = JSON_MAX_DEPTH
) -> str | None:
    """Why the JSON ``value`` cannot be stored, or ``None``; walked with a stack, so deep
    nesting is an answer rather than a RecursionError."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > max_depth:
            return f"may nest at most {max_depth} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (problem := text_problem(key)):
                    return f"keys {problem}"
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and (problem := text_problem(item)):
            return f"values {problem}"
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return "must hold finite numbers only (no NaN or Infinity)"
    if (size := len(encoded.encode())) > max_bytes:
        return f"is {size} bytes as JSON; at most {max_bytes} are kept"
    return None


def check_text(field: str, value: str | None) -> None:
    """Raise a 400 naming ``field`` when ``value`` cannot be stored."""
    if value is not None and (problem := text_problem(value)):
        raise ValidationFailed(f"{field} {problem}", details={"field": field})


def check_json(
    field: str,
    value: Any,
    *,
    max_bytes: int = JSON_MAX_BYTES,
    max_depth: int = JSON_MAX_DEPTH,
) -> None:
    """Raise a 400 naming ``field`` when the JSON ``value`` cannot be stored."""
    if value is not None and (
        problem := json_problem(value, max_bytes=max_bytes, max_depth=max_depth)
    ):
        raise ValidationFailed(f"{field} {problem}", details={"field": field})
