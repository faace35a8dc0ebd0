"""The one middleware every HTTP request passes: request id, credentials, rate limit, metrics,
and the last line of defence that turns an unhandled exception into the surface's 500."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agenthub.api.errors import ErrorContext
from agenthub.api.metrics import HttpMetrics
from agenthub.api.surfaces import render_error
from agenthub.core.auth import Principal
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import AppError, ErrorKind, RateLimited, Unavailable
from agenthub.core.ratelimit import RateLimitDecision
from agenthub.services.runtime import Runtime

log = logging.getLogger(__name__)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class AuthState:
    """What the middleware learned of the caller; the ``Principal`` dependency reads it."""

    __slots__ = ("error", "principal")

    def __init__(self, principal: Principal | None, error: AppError | None) -> None:
        self.principal = principal
        self.error = error


def client_ip(scope: Scope, headers: Headers, trusted_proxies: list[str]) -> str:
    peer = scope["client"][0] if scope.get("client") else "unknown"
    forwarded = headers.get("x-forwarded-for")
    if forwarded and peer in trusted_proxies:
        candidate = forwarded.split(",")[0].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            return peer
    return peer


def error_context(
    scope: Scope, validation_errors: list[dict[str, Any]] | None = None
) -> ErrorContext:
    state = scope.get("state") or {}
    return ErrorContext(
        request_id=state.get("request_id", ""),
        timestamp=isoformat_z(utcnow()),
        validation_errors=validation_errors,
    )


class HubMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime, metrics: HttpMetrics) -> None:
        self.app = app
        self.runtime = runtime
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        principal, auth_error = await self._authenticate(headers)
        state["auth"] = AuthState(principal, auth_error)
        if scope["type"] == "websocket":
            # WebSockets authenticate from their query string too; see api/deps.py.
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        status = 500
        decision = await self._rate_limit(scope, headers, principal)
        extra = [("X-Request-ID", request_id), *(decision.headers().items() if decision else [])]

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                response_headers = MutableHeaders(scope=message)
                for name, value in extra:
                    response_headers[name] = value
            await send(message)

        try:
            if decision is not None and not decision.allowed:
                limited = RateLimited("Rate limit exceeded.", retry_after=decision.retry_after)
                response = render_error(scope["path"], limited, error_context(scope))
                await response(scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            if started:
                raise
            err = AppError("Internal server error.", kind=ErrorKind.INTERNAL)
            response = render_error(scope["path"], err, error_context(scope))
            await response(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - start)

    async def _authenticate(self, headers: Headers) -> tuple[Principal | None, AppError | None]:
        try:
            return await self.runtime.authenticator.resolve(headers.get("authorization")), None
        except AppError as err:
            return None, err
        except Exception:
            # The credential store is down: routes that need a caller answer 503 in their
            # surface's format; public ones (health) still answer and report the outage.
            log.exception("could not resolve credentials")
            return None, Unavailable("Authentication is unavailable; try again shortly.")

    async def _rate_limit(
        self, scope: Scope, headers: Headers, principal: Principal | None
    ) -> RateLimitDecision | None:
        if not self.runtime.settings.rate_limit_enabled:
            return None
        subject = (
            principal.rate_limit_subject
            if principal is not None
            else "ip:" + client_ip(scope, headers, self.runtime.settings.trusted_proxies)
        )
        limiter = self.runtime.limiter_for(principal)
        try:
            return await limiter.hit(subject)
        except Exception:
            # Limiting is protection, not a dependency: an outage of its store must not take
            # the API down with it. The health routes report the store as unhealthy.
            log.exception("rate limiter unavailable; admitting request")
            return None
