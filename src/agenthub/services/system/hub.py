"""The hub as a whole: its installation uuid, and the figures of ``/hub/status`` and ``/health``."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.db.models import HubInfo, Node, Project
from agenthub.services.nodes.state import READY
from agenthub.services.projects.budgets import ACTIVE_PROJECT
from agenthub.services.projects.reports import active_machines

HUB_UUID = "hub_uuid"


async def hub_uuid(session: AsyncSession) -> str:
    """This installation's uuid, made on first use and shared by every replica."""
    found = await session.scalar(sa.select(HubInfo.value).where(HubInfo.key == HUB_UUID))
    if found is not None:
        return found
    value = str(uuid.uuid4())
    try:
        async with session.begin_nested():
            session.add(HubInfo(key=HUB_UUID, value=value))
    except IntegrityError:  # another replica made it first
        found = await session.scalar(sa.select(HubInfo.value).where(HubInfo.key == HUB_UUID))
        return found or value
    return value


async def counts(session: AsyncSession) -> tuple[int, int, int]:
    """Active machines, active projects and ready nodes."""
    machines = await active_machines(session, None)
    projects = await session.scalar(
        sa.select(sa.func.count()).select_from(Project).where(Project.status == ACTIVE_PROJECT)
    )
    nodes = await session.scalar(
        sa.select(sa.func.count()).select_from(Node).where(Node.status == READY)
    )
    return machines, int(projects or 0), int(nodes or 0)
