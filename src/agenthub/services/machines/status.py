"""A machine's status, read from its workload (so the two never disagree)."""

from __future__ import annotations

import sqlalchemy as sa

from agenthub.core.errors import ValidationFailed
from agenthub.db.models import Workload
from agenthub.services.scheduling.spec import (
    FAILED,
    LOST,
    QUEUED,
    RUNNING,
    SCHEDULED,
    STARTING,
    SUCCEEDED,
    TERMINATED,
)

M_QUEUED, SPAWNING, WORKING = "queued", "spawning", "working"
COMPLETED, M_FAILED, M_TERMINATED = "completed", "failed", "terminated"
STATUSES = (M_QUEUED, SPAWNING, WORKING, COMPLETED, M_FAILED, M_TERMINATED)
ENDED = (COMPLETED, M_FAILED, M_TERMINATED)

_BY_WORKLOAD = {
    SCHEDULED: SPAWNING,
    STARTING: SPAWNING,
    RUNNING: WORKING,
    SUCCEEDED: COMPLETED,
    FAILED: M_FAILED,
    LOST: M_FAILED,
    TERMINATED: M_TERMINATED,
}


def machine_status(workload: Workload) -> str:
    """``queued`` while no node has room for it (the scheduler said why), ``spawning`` until
    its process runs, ``working``, then ``completed | failed | terminated``."""
    if workload.status == QUEUED:
        return M_QUEUED if workload.pending_reason else SPAWNING
    return _BY_WORKLOAD[workload.status]


def status_condition(status: str) -> sa.ColumnElement[bool]:
    """SQL condition on the joined workload for machines in ``status``."""
    if status not in STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(STATUSES)}", details={"status": status}
        )
    if status == M_QUEUED:
        return sa.and_(Workload.status == QUEUED, Workload.pending_reason.is_not(None))
    if status == SPAWNING:
        return sa.or_(
            sa.and_(Workload.status == QUEUED, Workload.pending_reason.is_(None)),
            Workload.status.in_((SCHEDULED, STARTING)),
        )
    return Workload.status.in_([w for w, m in _BY_WORKLOAD.items() if m == status])
