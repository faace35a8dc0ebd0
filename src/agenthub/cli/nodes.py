"""``agenthub pool`` and ``agenthub machine``: worker pools and machine tokens, written
straight to the hub's database (and Redis, when configured)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import typer

from agenthub.cli.context import database, load_settings, migrate
from agenthub.cli.output import JsonOption, console, emit, fail
from agenthub.core.auth import MachineTokenType as TokenType
from agenthub.core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from agenthub.services.nodes.state import NodeStates

pool_app = typer.Typer(help="Worker pools.", no_args_is_help=True)
machine_app = typer.Typer(help="Worker machines and their tokens.", no_args_is_help=True)
T = TypeVar("T")


@asynccontextmanager
async def _unit_of_work(settings: Settings) -> AsyncIterator[tuple[AsyncSession, NodeStates]]:
    from redis.asyncio import Redis

    from agenthub.services.nodes.redis_state import RedisNodeStates
    from agenthub.services.nodes.sql_state import SqlNodeStates

    async with database(settings) as db:
        redis = (
            Redis.from_url(settings.redis_url, decode_responses=True)
            if settings.redis_url
            else None
        )
        states: NodeStates = (
            RedisNodeStates(redis, settings.redis_prefix) if redis else SqlNodeStates(db)
        )
        try:
            async with db.session() as session:
                yield session, states
        finally:
            if redis is not None:
                await redis.aclose()


def run_in_unit_of_work(
    settings: Settings, work: Callable[[AsyncSession, NodeStates], Awaitable[T]]
) -> T:
    from agenthub.core.errors import AppError

    async def run() -> T:
        async with _unit_of_work(settings) as (session, states):
            return await work(session, states)

    try:
        return asyncio.run(run())
    except AppError as exc:
        fail(exc.message)
        raise  # unreachable: fail() exits


@pool_app.command("create")
def pool_create(
    name: str = typer.Argument(..., help="Pool name: lower-case letters, digits, '-', '_'."),
    description: str | None = typer.Option(None, "--description", help="What the pool is for."),
    as_json: bool = typer.Option(False, "--json", help=JsonOption),
) -> None:
    """Create a pool machines can register into."""
    from agenthub.services.nodes.pools import create_pool

    settings = load_settings()
    migrate(settings)
    pool = run_in_unit_of_work(
        settings, lambda s, _: create_pool(s, settings, None, name, description)
    )
    emit({"name": pool.name, "source": pool.source}, as_json=as_json, title="pool created")


@pool_app.command("list")
def pool_list(as_json: bool = typer.Option(False, "--json", help=JsonOption)) -> None:
    """Pools machines can register into: `default`, AGENTHUB_POOLS, and created ones."""
    import json

    from rich.table import Table

    from agenthub.services.nodes.pools import list_pools

    settings = load_settings()
    migrate(settings)
    found = run_in_unit_of_work(settings, lambda s, _: list_pools(s, settings))
    if as_json:
        print(json.dumps([{"name": p.name, "source": p.source} for p in found]))
        return
    table = Table("pool", "source", "description")
    for p in found:
        table.add_row(p.name, p.source, p.description or "")
    console.print(table)


@machine_app.command("create")
def machine_create(
    pool: str = typer.Option(..., "--pool", help="The pool the machine joins."),
    machine_id: str | None = typer.Option(
        None, "--machine-id", help="Bind the token to this machine id (8 hex characters)."
    ),
    token_type: TokenType = typer.Option(
        TokenType.MACHINE,
        "--token-type",
        help="machine: one machine; worker: any number of machines of the pool.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JsonOption),
) -> None:
    """Mint a machine token and the machine's pending record. The token is shown once."""
    from agenthub.services.nodes.tokens import create_machine

    settings = load_settings()
    migrate(settings)
    issued = run_in_unit_of_work(
        settings,
        lambda s, states: create_machine(
            s, settings, states, None, pool_name=pool, machine_id=machine_id, token_type=token_type
        ),
    )
    emit(issued.public(), as_json=as_json, title="machine created")
    if not as_json:
        console.print(
            "Start its agent with:\n"
            f"  agenthub agent --hub <hub URL> --token {issued.token}"
            + (f" --machine-id {issued.machine_id}" if issued.machine_id else "")
        )
