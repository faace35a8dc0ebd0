"""Usage a machine reports itself (API calls and money it spent outside the hub's gateway),
and the summary of what a machine used."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.errors import Conflict, Forbidden, ValidationFailed
from agenthub.core.settings import Settings
from agenthub.services import events
from agenthub.services.machines.machines import MachineRecord, get_machine, stop
from agenthub.services.machines.status import ENDED
from agenthub.services.projects import ledger

BUDGET_EXHAUSTED = "budget_exhausted"
MAX_REPORTED_MONEY = 1_000_000.0
MAX_REPORTED_CALLS = 1_000_000


async def report_usage(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    machine_id: uuid.UUID,
    *,
    api_calls: int = 0,
    money: float = 0.0,
    model: str | None = None,
    description: str | None = None,
) -> MachineRecord:
    """Bill what a working machine spent. Its own workload token (or an admin) may report; once
    it reaches ``max_money`` or ``max_api_calls`` it is stopped (``budget_exhausted``)."""
    if not 0 <= api_calls <= MAX_REPORTED_CALLS:
        raise ValidationFailed(f"api_calls must be between 0 and {MAX_REPORTED_CALLS}")
    if not 0 <= money <= MAX_REPORTED_MONEY:
        raise ValidationFailed(f"money must be between 0 and {MAX_REPORTED_MONEY:.0f}")
    if api_calls == 0 and money == 0:
        raise ValidationFailed("Report at least one API call or some money.")
    found = await get_machine(session, principal, machine_id, lock=True)
    if not (principal.is_workload or principal.is_admin):
        raise Forbidden(
            "Only the machine itself (its AGENTHUB_TOKEN) or an admin may report usage."
        )
    if found.status in ENDED:
        raise Conflict(
            f"Machine {machine_id} has ended ({found.status}); it cannot spend any more.",
            code="machine_ended",
        )
    machine = found.machine
    await ledger.append(
        session,
        project_id=machine.project_id,
        machine_id=machine.id,
        source="report",
        usage=ledger.Usage(money=money, api_calls=api_calls),
        model=model,
        description=description,
    )
    await session.refresh(machine)
    events.notify(
        session,
        "machine.usage_reported",
        {"machine_uuid": str(machine.id), "api_calls": api_calls, "money": money},
    )
    exhausted = exhausted_budget(found)
    if exhausted is not None:
        await stop(session, found, f"{BUDGET_EXHAUSTED}: {exhausted}")
    return found


def exhausted_budget(found: MachineRecord) -> str | None:
    """Which of the machine's money / API-call limits it has reached, if any (a limit of 0 is
    reached by the first cent or call)."""
    machine = found.machine
    if machine.money_used > 0 and machine.money_used >= machine.max_money:
        return f"spent {machine.money_used:.6f} of max_money {machine.max_money:g}"
    if machine.api_calls_used > 0 and machine.api_calls_used >= machine.max_api_calls:
        return f"made {machine.api_calls_used} of max_api_calls {machine.max_api_calls}"
    return None


def resource_usage(found: MachineRecord) -> dict[str, Any]:
    """The Hub surface's ``resource_usage`` of a machine (estimated vs actual)."""
    machine = found.machine
    return {
        "money": {
            "estimated": machine.estimated_money,
            "actual": round(machine.money_used, 9),
            "limit": machine.max_money,
            "unit": "USD",
        },
        "time": {
            "estimated": machine.estimated_time_minutes,
            "actual": round(machine.time_seconds / 60, 3),
            "limit": machine.max_time_minutes,
            "unit": "minutes",
        },
        "api_calls": {
            "estimated": machine.estimated_api_calls,
            "actual": machine.api_calls_used,
            "limit": machine.max_api_calls,
            "unit": "calls",
        },
        "compute": {
            "cpu_hours": round(machine.cpu_seconds / 3600, 9),
            "memory_gb_hours": round(machine.memory_gb_seconds / 3600, 9),
        },
    }
