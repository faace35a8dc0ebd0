"""``agenthub admin``: local administration, straight on the database."""

from __future__ import annotations

import asyncio
import uuid

import typer

from agenthub.cli.context import database, load_settings, migrate
from agenthub.cli.output import JsonOption, emit
from agenthub.core.auth import Role

app = typer.Typer(help="Local administration (writes the database directly).", no_args_is_help=True)


@app.command("create-key")
def create_key(
    name: str = typer.Option(..., "--name", help="A name to tell the key apart."),
    role: Role = typer.Option(Role.ADMIN, "--role", help="admin or member."),
    project: uuid.UUID | None = typer.Option(None, "--project", help="Scope to one project."),
    tenant: uuid.UUID | None = typer.Option(None, "--tenant", help="Scope to one tenant."),
    as_json: bool = typer.Option(False, "--json", help=JsonOption),
) -> None:
    """Mint an API key; works whether or not a hub is running. The key is shown once."""
    from agenthub.services.identity.api_keys import create_api_key

    settings = load_settings()
    migrate(settings)

    async def run() -> tuple[str, str]:
        async with database(settings) as db, db.session() as session:
            record, key = await create_api_key(
                session, None, name=name, role=role, project_id=project, tenant_id=tenant
            )
            return key, str(record.id)

    key, key_id = asyncio.run(run())
    emit({"key": key, "id": key_id, "name": name, "role": role.value}, as_json=as_json)
