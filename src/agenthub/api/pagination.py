"""Query-parameter dependencies for list routes, built per surface from its documented limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Query

from agenthub.core.pagination import Page


def page_params(*, default: int, maximum: int) -> Callable[..., Awaitable[Page]]:
    """A dependency parsing ``limit`` (``default``, at most ``maximum``) and ``offset``."""

    async def dependency(
        limit: int = Query(default, ge=1, le=maximum, description=f"At most {maximum}."),
        offset: int = Query(0, ge=0, description="Items to skip."),
    ) -> Page:
        return Page(limit=limit, offset=offset)

    return dependency
