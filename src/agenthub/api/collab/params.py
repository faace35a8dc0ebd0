"""The Collab surface's list parameters (limit default 20, at most 100) and shared helpers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends

from agenthub.api.pagination import page_params
from agenthub.core.clock import isoformat_z
from agenthub.core.pagination import Page

CollabPage = Annotated[Page, Depends(page_params(default=20, maximum=100))]


def ts(value: datetime | None) -> str | None:
    """A Collab timestamp: ISO 8601 in UTC with ``Z``."""
    return isoformat_z(value) if value is not None else None


def ok(**fields: Any) -> dict[str, Any]:
    """A Collab success body: ``{"success": true, ...fields}``."""
    return {"success": True, **fields}
