"""Pagination, sorting and field selection shared by every list route.

Each surface builds its own query-parameter dependencies from :func:`page_params` with its
documented default and maximum; the parsed values are plain dataclasses that services accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agenthub.core.errors import ValidationFailed

SortOrder = Literal["asc", "desc"]


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int

    def next_offset(self, total: int) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < total else None

    def prev_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None

    def has_more(self, total: int) -> bool:
        return self.offset + self.limit < total


@dataclass(frozen=True)
class Sort:
    field: str
    order: SortOrder

    @classmethod
    def parse(
        cls, sort: str | None, order: str | None, *, allowed: Iterable[str], default: Sort
    ) -> Sort:
        """Validate ``sort``/``order`` against the fields a list may be sorted by."""
        allowed = list(allowed)
        field = sort or default.field
        direction = (order or default.order).lower()
        # Also accept the "-field" and "field_desc" spellings some documents use.
        if field.startswith("-"):
            field, direction = field[1:], "desc"
        for suffix, implied in (("_desc", "desc"), ("_asc", "asc")):
            if field.endswith(suffix) and field not in allowed:
                field, direction = field.removesuffix(suffix), implied
        if field not in allowed:
            raise ValidationFailed(
                f"Cannot sort by '{field}'. Sortable fields: {', '.join(allowed)}.",
                details={"sort": field, "allowed": allowed},
            )
        if direction not in ("asc", "desc"):
            raise ValidationFailed("order must be 'asc' or 'desc'.", details={"order": order})
        return cls(field, "desc" if direction == "desc" else "asc")


def parse_fields(fields: str | None, *, allowed: Iterable[str]) -> list[str] | None:
    """Parse ``fields=a,b`` into a list, rejecting unknown names; ``None`` means all fields."""
    if fields is None or not fields.strip():
        return None
    allowed = set(allowed)
    wanted = [f.strip() for f in fields.split(",") if f.strip()]
    unknown = sorted(set(wanted) - allowed)
    if unknown:
        raise ValidationFailed(
            f"Unknown field(s): {', '.join(unknown)}.",
            details={"fields": unknown, "allowed": sorted(allowed)},
        )
    return wanted


def select_fields(item: Mapping[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if fields is None:
        return dict(item)
    return {name: item[name] for name in fields if name in item}
