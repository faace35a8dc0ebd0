from __future__ import annotations

import pytest

from agenthub.core.errors import ValidationFailed
from agenthub.core.pagination import Page, Sort, parse_fields, select_fields

DEFAULT = Sort("created_at", "desc")


def test_page_arithmetic() -> None:
    page = Page(limit=10, offset=20)
    assert page.next_offset(100) == 30
    assert page.next_offset(30) is None
    assert page.prev_offset() == 10
    assert Page(10, 0).prev_offset() is None
    assert page.has_more(31)
    assert not page.has_more(30)


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        (None, None, Sort("created_at", "desc")),
        ("name", "asc", Sort("name", "asc")),
        ("-name", None, Sort("name", "desc")),
        ("name_desc", None, Sort("name", "desc")),
        ("NAME", None, None),
    ],
)
def test_sort_parse(sort: str | None, order: str | None, expected: Sort | None) -> None:
    allowed = ["created_at", "name"]
    if expected is None:
        with pytest.raises(ValidationFailed, match="Sortable fields: created_at, name"):
            Sort.parse(sort, order, allowed=allowed, default=DEFAULT)
    else:
        assert Sort.parse(sort, order, allowed=allowed, default=DEFAULT) == expected


def test_sort_rejects_bad_order() -> None:
    with pytest.raises(ValidationFailed, match="order"):
        Sort.parse("name", "sideways", allowed=["name"], default=DEFAULT)


def test_fields() -> None:
    assert parse_fields(None, allowed=["a", "b"]) is None
    assert parse_fields(" a , b ", allowed=["a", "b"]) == ["a", "b"]
    with pytest.raises(ValidationFailed, match="Unknown field"):
        parse_fields("a,zzz", allowed=["a", "b"])
    assert select_fields({"a": 1, "b": 2, "c": 3}, ["c", "a"]) == {"c": 3, "a": 1}
