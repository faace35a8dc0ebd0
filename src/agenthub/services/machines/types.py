"""Machine types: what command runs a machine's prompt.

``shell`` is built in: the prompt is a bash script run in the workspace. More types are declared
in settings (``AGENTHUB_MACHINE_TYPES``) as command templates.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from agenthub.core.errors import ValidationFailed
from agenthub.core.settings import Settings

PLACEHOLDERS = ("{prompt}", "{machine_uuid}", "{project_uuid}")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


@dataclass(frozen=True)
class MachineType:
    name: str
    command: list[str]
    description: str = ""
    cpu_millicores: int | None = None
    memory_mib: int | None = None
    env: dict[str, str] = field(default_factory=dict)


SHELL = MachineType(
    name="shell",
    command=["bash", "-c", "{prompt}", "machine"],
    description="The prompt is a bash script, run in the workspace.",
)


def machine_types(settings: Settings) -> dict[str, MachineType]:
    """Every type this hub can spawn, the built-in ones first."""
    types = {SHELL.name: SHELL}
    for name, declared in settings.machine_types.items():
        types[name] = MachineType(
            name=name,
            command=list(declared.command),
            description=declared.description,
            cpu_millicores=declared.cpu_millicores,
            memory_mib=declared.memory_mib,
            env=dict(declared.env),
        )
    return types


def resolve(settings: Settings, name: str) -> MachineType:
    types = machine_types(settings)
    if name not in types:
        known = sorted(types)
        raise ValidationFailed(
            f"Unknown machine type {name!r}. Known types: {', '.join(known)}.",
            code="unknown_machine_type",
            details={"type": name, "known_types": known},
        )
    return types[name]


def render(
    machine_type: MachineType, *, prompt: str, machine_id: uuid.UUID, project_id: uuid.UUID
) -> list[str]:
    """The type's argv with its placeholders filled in (each argument stays one argument,
    so a prompt is never split or interpreted by a shell it was not meant for)."""
    values = {
        "{prompt}": prompt,
        "{machine_uuid}": str(machine_id),
        "{project_uuid}": str(project_id),
    }
    # One pass per argument: a prompt that itself contains "{machine_uuid}" stays as written.
    return [_PLACEHOLDER.sub(lambda m: values[m.group(0)], arg) for arg in machine_type.command]
