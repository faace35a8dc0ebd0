"""What the databases can store: NUL, lone surrogates, NaN, size and depth are refused."""

from __future__ import annotations

import pytest

from agenthub.core.errors import ValidationFailed
from agenthub.core.storable import check_json, check_text, json_problem, text_problem


def test_text() -> None:
    assert text_problem("plain — ünïcode ✓") is None
    assert text_problem("a\x00b") == "must not contain NUL characters"
    assert text_problem("\ud800") == "must be valid Unicode (no lone surrogates)"
    check_text("f", None)
    with pytest.raises(ValidationFailed) as exc:
        check_text("title", "x\x00")
    assert exc.value.details == {"field": "title"}
    assert str(exc.value.message).startswith("title must not contain NUL")


def test_json() -> None:
    assert json_problem({"a": [1, 2.5, "x", None, {"b": True}]}) is None
    assert json_problem({"k\x00": 1}) == "keys must not contain NUL characters"
    assert json_problem({"k": ["\x00"]}) == "values must not contain NUL characters"
    assert json_problem({"k": float("nan")}) == "must hold finite numbers only (no NaN or Infinity)"
    assert (
        json_problem({"k": "x" * 100}, max_bytes=50) == "is 108 bytes as JSON; at most 50 are kept"
    )
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    assert json_problem(deep) == "may nest at most 32 levels"
    assert json_problem(deep, max_depth=64) is None
    # Deeper than Python's recursion limit: still an answer, not a RecursionError.
    very: list[object] = []
    for _ in range(5000):
        very = [very]
    assert json_problem(very) == "may nest at most 32 levels"
    with pytest.raises(ValidationFailed):
        check_json("metadata", {"x": float("inf")})
