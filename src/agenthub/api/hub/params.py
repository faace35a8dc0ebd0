"""The Hub surface's list parameters (limit default 20, at most 100)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from agenthub.api.pagination import page_params
from agenthub.core.pagination import Page

HubPage = Annotated[Page, Depends(page_params(default=20, maximum=100))]
