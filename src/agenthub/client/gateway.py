"""Async client for the Gateway surface (``/api/v1/machine/...``): what a worker machine calls.

Every Gateway error body is ``{"error": "<message>", "code": "<code>"}``; they surface here as
:class:`GatewayError` and its subclasses. Transport failures (connection refused, timeouts) are
left as ``httpx`` errors so that a caller can tell "the hub said no" from "the hub is not there".
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx

__all__ = ["GatewayClient", "GatewayError", "InvalidToken", "MachineNotFound", "error_from"]

_PREFIX = "/api/v1/machine"


class GatewayError(Exception):
    """The hub answered a Gateway request with a non-2xx status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def transient(self) -> bool:
        """Whether retrying the same request later may succeed (5xx, 408, 429)."""
        return self.status >= 500 or self.status in (408, 429)


class InvalidToken(GatewayError):
    """403: the token is unknown, revoked, expired, or not valid for this machine or pool."""


class MachineNotFound(GatewayError):
    """The hub holds no live state for the machine (never registered, or its TTL lapsed)."""

    @property
    def transient(self) -> bool:
        # Retrying the same keepalive cannot help: the machine must register again.
        return False


def error_from(response: httpx.Response) -> GatewayError:
    """The :class:`GatewayError` (or subclass) for a non-2xx answer in the Gateway envelope."""
    code, message = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or "")
        message = str(body.get("error") or body.get("detail") or "")
    if not message:
        message = response.text[:200] or response.reason_phrase
    status = response.status_code
    if code == "machine_not_found":
        return MachineNotFound(status, code, message)
    if status == 403:
        return InvalidToken(status, code or "invalid_token", message)
    return GatewayError(status, code, message)


class MachineTokenClient:
    """The HTTP plumbing of a client that calls the hub with a machine token: one connection
    pool, the Gateway error envelope mapped to :class:`GatewayError`, JSON answers checked."""

    prefix = ""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._token = token
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, f"{self.prefix}{path}", **kwargs)
        if not response.is_success:
            raise error_from(response)
        try:
            return response.json()
        except ValueError as err:
            raise GatewayError(
                response.status_code, "invalid_response", "the hub answered with non-JSON"
            ) from err

    async def _call_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = await self._call(method, path, **kwargs)
        if not isinstance(data, dict):
            raise GatewayError(200, "invalid_response", f"expected an object from {path}")
        return data


class GatewayClient(MachineTokenClient):
    """Register, keep alive and look up worker machines with a machine (or worker) token."""

    prefix = _PREFIX

    async def register(self, registration: dict[str, Any]) -> dict[str, Any]:
        """``POST /register``: announce this machine and its capacity.

        ``registration`` holds the document's fields (machine_id, hostname, pool_name, cpu,
        memory, gpu_count, private_ip, ...); the token is added to the body as the document asks.
        Returns ``{"config": ..., "machine_state": {...}}``.
        """
        body = {"token": self._token, **registration}
        return await self._call_object("POST", "/register", json=body)

    async def keepalive(
        self,
        machine_id: str,
        pool_name: str,
        *,
        agent_version: str | None = None,
        provider_name: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /keepalive``: refresh the machine's TTL and report metrics.

        Raises :class:`MachineNotFound` when the hub no longer knows the machine; the caller
        should register again.
        """
        body: dict[str, Any] = {"machine_id": machine_id, "pool_name": pool_name}
        if provider_name is not None:
            body["provider_name"] = provider_name
        if agent_version is not None:
            body["agent_version"] = agent_version
        if metrics is not None:
            body["metrics"] = metrics
        return await self._call_object("POST", "/keepalive", json=body)

    async def config(self) -> dict[str, Any]:
        """``GET /config``: how to reach the hub, the token's own binding and keepalive timing."""
        return await self._call_object("GET", "/config")

    async def list_machines(
        self, pool_name: str | None = None, provider_name: str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /list``: ready machines, each ``{"state": {...}, "metrics": {...}}``."""
        params = {
            key: value
            for key, value in (("pool_name", pool_name), ("provider_name", provider_name))
            if value is not None
        }
        data = await self._call("GET", "/list", params=params)
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise GatewayError(200, "invalid_response", "expected a list of machines from /list")
        return data
