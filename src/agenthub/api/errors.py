"""What every surface's error renderer receives: the error, normalised, plus request context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorContext:
    request_id: str
    timestamp: str
    # FastAPI's validation error list, for surfaces that show it as is (Orchestration).
    validation_errors: list[dict[str, Any]] | None = None
