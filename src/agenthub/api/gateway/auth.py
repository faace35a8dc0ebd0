"""Who may call the Gateway surface: machine tokens (and admins, for list and config).

Dependencies, so that a caller without the right token gets the document's 403 before its
body is validated."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from agenthub.api.deps import OptionalPrincipalDep
from agenthub.core.auth import Principal
from agenthub.services.nodes.gateway import require_machine, require_machine_or_admin


async def machine_principal(principal: OptionalPrincipalDep) -> Principal:
    return require_machine(principal)


async def machine_or_admin_principal(principal: OptionalPrincipalDep) -> Principal:
    return require_machine_or_admin(principal)


MachineDep = Annotated[Principal, Depends(machine_principal)]
MachineOrAdminDep = Annotated[Principal, Depends(machine_or_admin_principal)]
