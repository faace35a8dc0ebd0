"""Query helpers shared by services: counted, sorted pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.pagination import Page, Sort

T = TypeVar("T")


async def fetch_page(
    session: AsyncSession,
    stmt: sa.Select[T],
    *,
    page: Page,
    sort: Sort,
    columns: Mapping[str, sa.ColumnElement[Any] | sa.orm.InstrumentedAttribute[Any]],
    tiebreak: sa.ColumnElement[Any] | sa.orm.InstrumentedAttribute[Any],
) -> tuple[Sequence[T], int]:
    """One page of ``stmt`` sorted by ``sort`` (a key of ``columns``) and the total count."""
    total = await session.scalar(
        sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())
    )
    column = columns[sort.field]
    ordering = column.desc() if sort.order == "desc" else column.asc()
    tie = tiebreak.desc() if sort.order == "desc" else tiebreak.asc()
    rows = await session.scalars(stmt.order_by(ordering, tie).limit(page.limit).offset(page.offset))
    return rows.all(), int(total or 0)
