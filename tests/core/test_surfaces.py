"""Every surface renders every kind of error in its documented envelope."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agenthub.api.errors import ErrorContext
from agenthub.api.surfaces import Surface, render_error, surface_for_path
from agenthub.core.errors import AppError, ErrorKind, NotFound, RateLimited, ValidationFailed

CTX = ErrorContext(request_id="rid-1", timestamp="2026-01-01T00:00:00Z")
VALIDATION_CTX = ErrorContext(
    request_id="rid-1",
    timestamp="2026-01-01T00:00:00Z",
    validation_errors=[{"loc": ["body", "x"], "msg": "Field required", "type": "missing"}],
)


@pytest.mark.parametrize(
    ("path", "surface"),
    [
        ("/api/v1/machines", Surface.HUB),
        ("/api/v1/projects/abc/checkpoints", Surface.HUB),
        ("/api/v1/health", Surface.HUB),
        ("/api/v1/machine/register", Surface.GATEWAY),
        ("/api/v1/tasks/1", Surface.ORCHESTRATION),
        ("/api/v1/orchestration/workflows", Surface.ORCHESTRATION),
        ("/ws", Surface.ORCHESTRATION),
        ("/api/v1/auth/login", Surface.COLLAB),
        ("/api/v1/rate-limit/status", Surface.COLLAB),
        ("/api/v1/message/inbox", Surface.COLLAB),
        ("/api/nodes", Surface.CLUSTER),
        ("/api/auth/login", Surface.CLUSTER),
        ("/elsewhere", Surface.CLUSTER),
    ],
)
def test_surface_for_path(path: str, surface: Surface) -> None:
    assert surface_for_path(path) is surface


def body(path: str, err: AppError, ctx: ErrorContext = CTX) -> tuple[int, dict[str, Any]]:
    response = render_error(path, err, ctx)
    return response.status_code, json.loads(bytes(response.body))


def test_hub_envelope() -> None:
    status, data = body("/api/v1/machines", ValidationFailed("bad"), VALIDATION_CTX)
    assert status == 400
    assert data["success"] is False
    assert data["error"]["code"] == "VALIDATION_ERROR"
    assert data["error"]["request_id"] == "rid-1"
    assert set(data["error"]) == {"code", "message", "details", "request_id", "timestamp"}
    assert (
        body("/api/v1/machines", AppError("x", kind=ErrorKind.LIMIT_EXCEEDED))[1]["error"]["code"]
        == "RESOURCE_LIMIT_EXCEEDED"
    )
    assert body("/api/v1/x", AppError("x"))[0] == 500


def test_conflict_and_limit_exceeded_stay_distinct() -> None:
    """Both are 409, but a plain conflict must not read as a budget refusal."""
    assert ErrorKind.CONFLICT is not ErrorKind.LIMIT_EXCEEDED
    status, data = body("/api/v1/projects", AppError("exists", kind=ErrorKind.CONFLICT))
    assert status == 409
    assert data["error"]["code"] == "CONFLICT"
    status, data = body("/api/v1/projects", AppError("over", kind=ErrorKind.LIMIT_EXCEEDED))
    assert status == 409
    assert data["error"]["code"] == "RESOURCE_LIMIT_EXCEEDED"


def test_orchestration_envelope() -> None:
    assert body("/api/v1/tasks", NotFound("Task not found")) == (404, {"detail": "Task not found"})
    status, data = body("/api/v1/tasks", ValidationFailed("bad"), VALIDATION_CTX)
    assert status == 422
    assert data["detail"][0]["msg"] == "Field required"


def test_gateway_envelope() -> None:
    assert body("/api/v1/machine/keepalive", NotFound("x", code="machine_not_found")) == (
        404,
        {"error": "x", "code": "machine_not_found"},
    )
    assert body("/api/v1/machine/register", ValidationFailed("bad"), VALIDATION_CTX) == (
        400,
        {"error": "Invalid payload", "code": "invalid_payload"},
    )
    unauthorized = AppError("no", kind=ErrorKind.UNAUTHORIZED)
    assert body("/api/v1/machine/list", unauthorized) == (
        403,
        {"error": "Invalid token", "code": "invalid_token"},
    )


def test_collab_envelope() -> None:
    status, data = body("/api/v1/ai/9", NotFound("AI not found", code="ai_not_found"))
    assert (status, data) == (404, {"error": "AI not found", "code": "AI_NOT_FOUND", "details": {}})
    status, data = body("/api/v1/ai/list", RateLimited("Rate limit exceeded", retry_after=12))
    assert status == 429
    assert data["code"] == "RATE_LIMIT_EXCEEDED"
    assert data["retry_after"] == 12
    assert body("/api/v1/auth/verify", AppError("x", kind=ErrorKind.UNAUTHORIZED))[1]["code"] == (
        "INVALID_TOKEN"
    )


def test_cluster_envelope() -> None:
    status, data = body("/api/nodes/x", NotFound("Node not found"))
    assert (status, data) == (
        404,
        {"success": False, "error": {"code": "resource_not_found", "message": "Node not found"}},
    )
    response = render_error("/api/nodes", RateLimited("x", retry_after=7), CTX)
    assert response.headers["Retry-After"] == "7"
    assert json.loads(bytes(response.body))["error"] == {
        "code": "rate_limit_exceeded",
        "message": "Rate limit exceeded. Try again in 7 seconds.",
    }
