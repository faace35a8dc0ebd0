"""Async client for the work protocol (``/api/v1/node/...``): how a node agent gets work.

The node long-polls ``/poll`` for assignments and cancels and sends status, usage and log lines to
``/report``; the hub never connects to the node. Errors use the Gateway envelope
(``{"error": msg, "code": code}``) and surface as :class:`~agenthub.client.gateway.GatewayError`
and its subclasses; transport failures are left as ``httpx`` errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import httpx

from agenthub.client.gateway import GatewayError, error_from

__all__ = ["MAX_POLL_WAIT_S", "NodeClient"]

_PREFIX = "/api/v1/node"
MAX_POLL_WAIT_S = 30.0
# A parked poll may legitimately take wait_s; this much more is what a slow answer may add.
_POLL_TIMEOUT_MARGIN_S = 10.0


class NodeClient:
    """Poll for work and report on it with a machine token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
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

    async def _post(self, path: str, body: dict[str, Any], http_timeout: float) -> dict[str, Any]:
        response = await self._http.post(f"{_PREFIX}{path}", json=body, timeout=http_timeout)
        if not response.is_success:
            raise error_from(response)
        try:
            data = response.json()
        except ValueError as err:
            raise GatewayError(
                response.status_code, "invalid_response", "the hub answered with non-JSON"
            ) from err
        if not isinstance(data, dict):
            raise GatewayError(200, "invalid_response", f"expected an object from {path}")
        return data

    async def poll(
        self,
        machine_id: str,
        runtimes: Iterable[str],
        running: Iterable[tuple[str, int]],
        wait_s: float,
    ) -> dict[str, Any]:
        """``POST /poll``: new assignments and cancels, waiting up to ``wait_s`` for some.

        ``running`` lists every ``(workload_id, attempt)`` this agent runs or is starting, so that
        the hub can reconcile. Returns ``{"assignments": [...], "cancel": [...]}``, both lists
        present (empty when the hub sent none).
        """
        wait_s = min(max(wait_s, 0.0), MAX_POLL_WAIT_S)
        body = {
            "machine_id": machine_id,
            "runtimes": list(runtimes),
            "running": [{"workload_id": wid, "attempt": attempt} for wid, attempt in running],
            "wait_s": wait_s,
        }
        data = await self._post("/poll", body, http_timeout=wait_s + _POLL_TIMEOUT_MARGIN_S)
        return {
            "assignments": _objects(data, "assignments"),
            "cancel": _objects(data, "cancel"),
        }

    async def report(
        self,
        machine_id: str,
        updates: list[dict[str, Any]],
        logs: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """``POST /report``: status updates (in order) and log lines.

        Returns ``{"cancel": [...]}``: workloads the hub does not recognise as this node's.
        """
        body = {"machine_id": machine_id, "updates": updates, "logs": logs}
        data = await self._post("/report", body, http_timeout=self._timeout)
        return {"cancel": _objects(data, "cancel")}


def _objects(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise GatewayError(200, "invalid_response", f"expected a list of objects in {key!r}")
    return value
