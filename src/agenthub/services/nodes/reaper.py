"""The keepalive reaper: machines whose TTL lapsed become ``lost`` (an event says so).

Any hub replica may run it: the store hands each expired machine to exactly one claimant.
"""

from __future__ import annotations

import asyncio
import logging
import time

from agenthub.core.clock import utcnow
from agenthub.core.events import EventBus
from agenthub.db.engine import Database
from agenthub.db.models import Node
from agenthub.services import events
from agenthub.services.nodes.state import EXPIRED, LOST, PENDING, READY, REGISTERED, NodeStates
from agenthub.services.scheduling import workloads

log = logging.getLogger(__name__)


async def reap_once(db: Database, bus: EventBus, states: NodeStates) -> list[str]:
    """One pass; returns the ids of machines marked lost."""
    lost: list[str] = []
    async with events.unit_of_work(db, bus) as session:
        expired = await states.claim_expired(time.time(), session=session)
        for item in expired:
            node = await session.get(Node, item.machine_id)
            if node is None:
                continue
            if await states.get(node.id, session=session) is not None:
                continue  # registered again since it expired
            if (item.status or node.status) == PENDING and node.status == PENDING:
                node.status = EXPIRED
            elif node.status in (REGISTERED, READY):
                previous = node.status
                node.status = LOST
                node.lost_at = utcnow()
                lost.append(node.id)
                await events.record(
                    session,
                    "node.left",
                    {
                        "node_id": node.id,
                        "pool_name": node.pool_name,
                        "hostname": node.hostname,
                        "previous_status": previous,
                        "status": LOST,
                        "reason": "keepalive TTL lapsed",
                    },
                )
                # Its work is lost with it; the restart policies put it back in the queue.
                await workloads.node_lost(session, node.id)
    for node_id in lost:
        log.warning("node %s lost: no keepalive within its TTL", node_id)
    return lost


async def run_forever(db: Database, bus: EventBus, states: NodeStates, interval_s: float) -> None:
    while True:
        try:
            await reap_once(db, bus, states)
        except Exception:  # keep reaping; the next pass picks up what this one missed
            log.exception("node reaper pass failed")
        await asyncio.sleep(interval_s)
