"""Query-parameter dependencies for list routes, built per surface from its documented limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Query

from agenthub.core.pagination import Page

# A 64-bit signed integer: both databases refuse a larger OFFSET (a 500 instead of a 400).
MAX_OFFSET = 2**63 - 1


def page_params(*, default: int, maximum: int) -> Callable[..., Awaitable[Page]]:
    """A dependency parsing ``limit`` (``default``, at most ``maximum``) and ``offset``."""

    async def dependency(
        limit: int = Query(default, ge=1, le=maximum, description=f"At most {maximum}."),
        offset: int = Query(0, ge=0, le=MAX_OFFSET, description="Items to skip."),
    ) -> Page:
        return Page(limit=limit, offset=offset)

    return dependency
