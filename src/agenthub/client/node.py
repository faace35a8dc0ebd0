"""Async client for the work protocol (``/api/v1/node/...``): how a node agent gets work.

The node long-polls ``/poll`` for assignments and cancels and sends status, usage and log lines to
``/report``; the hub never connects to the node. Errors use the Gateway envelope
(``{"error": msg, "code": code}``) and surface as :class:`~agenthub.client.gateway.GatewayError`
and its subclasses; transport failures are left as ``httpx`` errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agenthub.client.gateway import GatewayError, MachineTokenClient

__all__ = ["MAX_POLL_WAIT_S", "NodeClient"]

_PREFIX = "/api/v1/node"
MAX_POLL_WAIT_S = 30.0
# A parked poll may legitimately take wait_s; this much more is what a slow answer may add.
_POLL_TIMEOUT_MARGIN_S = 10.0


class NodeClient(MachineTokenClient):
    """Poll for work and report on it with a machine token."""

    prefix = _PREFIX

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
        data = await self._call_object(
            "POST", "/poll", json=body, timeout=wait_s + _POLL_TIMEOUT_MARGIN_S
        )
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
        data = await self._call_object("POST", "/report", json=body)
        return {"cancel": _objects(data, "cancel")}


def _objects(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise GatewayError(200, "invalid_response", f"expected a list of objects in {key!r}")
    return value
