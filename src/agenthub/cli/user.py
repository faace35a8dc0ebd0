"""``agenthub user``: people who log in with a password."""

from __future__ import annotations

import asyncio

import typer

from agenthub.cli.context import database, load_settings, migrate
from agenthub.cli.output import JsonOption, emit, fail
from agenthub.core.auth import Role
from agenthub.core.errors import AppError

app = typer.Typer(help="Users (username + password).", no_args_is_help=True)


@app.command("create")
def create(
    username: str = typer.Option(..., "--username"),
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True),
    role: Role = typer.Option(Role.MEMBER, "--role", help="admin or member."),
    as_json: bool = typer.Option(False, "--json", help=JsonOption),
) -> None:
    """Create a user who can log in (Cluster ``/api/auth/login``, HTTP Basic)."""
    from agenthub.services.identity.users import create_user

    settings = load_settings()
    migrate(settings)

    async def run() -> str:
        async with database(settings) as db, db.session() as session:
            user = await create_user(session, None, username=username, password=password, role=role)
            return str(user.id)

    try:
        user_id = asyncio.run(run())
    except AppError as err:
        fail(err.message)
        return
    emit({"id": user_id, "username": username, "role": role.value}, as_json=as_json)
