"""Work protocol routes: node agents poll for assignments and report what their runs do.

Authenticated by the machine token that registered the node; errors in the Gateway envelope
(``{"error", "code"}``), since the same agent speaks both.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from agenthub.api.deps import RuntimeDep, SessionDep
from agenthub.api.gateway.auth import MachineDep
from agenthub.api.routing import SurfaceRouter
from agenthub.services.scheduling import logs, protocol, tokens

router = SurfaceRouter(prefix="/api/v1/node", tags=["node"])

MACHINE_ID = Field(min_length=1, max_length=64, description="The registered machine's id.")


class RunRef(BaseModel):
    workload_id: uuid.UUID
    attempt: int = Field(ge=1)


class PollRequest(BaseModel):
    machine_id: str = MACHINE_ID
    runtimes: list[str] = Field(default_factory=list, max_length=8)
    running: list[RunRef] = Field(
        default_factory=list, max_length=10000, description="Every run the agent has now."
    )
    wait_s: float = Field(20.0, ge=0, le=protocol.MAX_WAIT_S)


class Cancel(BaseModel):
    workload_id: uuid.UUID
    attempt: int
    reason: str


class Snapshot(BaseModel):
    checkpoint_id: uuid.UUID
    workspace: str


class PollResponse(BaseModel):
    assignments: list[dict[str, object]]
    cancel: list[Cancel]
    snapshots: list[Snapshot] = Field(
        default_factory=list, description="Workspaces to checkpoint and upload."
    )


class Usage(BaseModel):
    cpu_seconds: float | None = Field(None, ge=0)
    memory_peak_mib: float | None = Field(None, ge=0)


class StatusUpdate(BaseModel):
    workload_id: uuid.UUID
    attempt: int = Field(ge=1)
    status: str = Field(pattern="^(starting|running|succeeded|failed|terminated)$")
    exit_code: int | None = None
    error: str | None = Field(None, max_length=4000)
    usage: Usage | None = None
    at: float


class Line(BaseModel):
    at: float
    stream: str = Field("stdout", pattern="^(stdout|stderr)$")
    text: str


class LogBatch(BaseModel):
    workload_id: uuid.UUID
    attempt: int = Field(ge=1)
    lines: list[Line] = Field(max_length=20000)


class ReportRequest(BaseModel):
    machine_id: str = MACHINE_ID
    updates: list[StatusUpdate] = Field(default_factory=list, max_length=5000)
    logs: list[LogBatch] = Field(default_factory=list, max_length=5000)


class ReportResponse(BaseModel):
    cancel: list[Cancel]


@router.post("/poll", response_model=PollResponse)
async def poll(body: PollRequest, machine: MachineDep, runtime: RuntimeDep) -> PollResponse:
    """Long poll: reconcile the runs the agent lists, answer with assignments to start and
    runs to stop — at once when there are some, else when one arrives or ``wait_s`` passes.
    Each assignment carries a fresh workload token in its env (``AGENTHUB_TOKEN``)."""
    result = await protocol.poll(
        runtime.db,
        runtime.bus,
        runtime.wakeups,
        runtime.nodes,
        machine,
        body.machine_id.strip().lower(),
        body.runtimes,
        [protocol.RunRef(r.workload_id, r.attempt) for r in body.running],
        body.wait_s,
        mint_token=tokens.token_minter(runtime.settings.secret_key),
    )
    return PollResponse(
        assignments=result.assignments,
        cancel=[Cancel(**c) for c in result.cancel],
        snapshots=[Snapshot(**s) for s in result.snapshots],
    )


@router.post("/report", response_model=ReportResponse)
async def report(
    body: ReportRequest, machine: MachineDep, runtime: RuntimeDep, session: SessionDep
) -> ReportResponse:
    """Status transitions, usage and log lines of this node's runs; answers with runs the
    hub does not recognise as this node's, which the agent must stop."""
    cancel = await protocol.report(
        session,
        runtime.nodes,
        machine,
        body.machine_id.strip().lower(),
        [
            protocol.StatusUpdate(
                workload_id=u.workload_id,
                attempt=u.attempt,
                status=u.status,
                at=u.at,
                exit_code=u.exit_code,
                error=u.error,
                cpu_seconds=u.usage.cpu_seconds if u.usage else None,
                memory_peak_mib=u.usage.memory_peak_mib if u.usage else None,
            )
            for u in body.updates
        ],
        [
            protocol.LogBatch(
                b.workload_id, b.attempt, [logs.LogLine(x.at, x.stream, x.text) for x in b.lines]
            )
            for b in body.logs
        ],
        max_log_lines=runtime.settings.workload_log_max_lines,
    )
    return ReportResponse(cancel=[Cancel(**c) for c in cancel])
