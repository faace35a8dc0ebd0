"""``agenthub serve``, ``agenthub up`` and ``agenthub version``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from agenthub import __version__
from agenthub.cli.context import database, load_settings, migrate
from agenthub.cli.output import JsonOption, console, emit
from agenthub.core.processes import die_with_parent
from agenthub.core.settings import Settings

HostOption = typer.Option("127.0.0.1", "--host", help="Interface to listen on.")
PortOption = typer.Option(8000, "--port", help="Port to listen on.")
LogLevelOption = typer.Option("info", "--log-level", help="uvicorn log level.")


def _run(host: str, port: int, log_level: str, workers: int = 1) -> None:
    import uvicorn

    from agenthub.api.app import create_app

    # With several workers, each process builds its own app from the same environment.
    app = "agenthub.api.app:app_from_environment" if workers > 1 else create_app(load_settings())
    uvicorn.run(
        app,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        ws_ping_interval=None,  # the /ws protocol sends its own ping frames
        # Node agents park long polls here; on shutdown they are cut after this (the agents
        # poll again), instead of holding the exit for a whole poll.
        timeout_graceful_shutdown=2,
    )


def serve(
    host: str = HostOption,
    port: int = PortOption,
    log_level: str = LogLevelOption,
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Hub processes sharing the port. With more than one, use PostgreSQL and Redis "
        "(every piece of shared state is then outside the processes).",
    ),
) -> None:
    """Run the hub: all five API surfaces on one port (migrates the database first)."""
    migrate(load_settings())
    _run(host, port, log_level, workers)


def up(
    host: str = HostOption,
    port: int = PortOption,
    log_level: str = LogLevelOption,
    as_json: bool = typer.Option(False, "--json", help=JsonOption),
) -> None:
    """Run the whole system on this machine: the hub with SQLite and local state.

    On first start it prints an admin API key; keep it, it is not shown again.
    """
    from agenthub.services.identity.bootstrap import ensure_bootstrap_key

    settings = load_settings()
    migrate(settings)

    async def bootstrap() -> str | None:
        async with database(settings) as db:
            return await ensure_bootstrap_key(db)

    key = asyncio.run(bootstrap())
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = settings.public_url or f"http://{shown_host}:{port}"
    local_machine = _issue_local_agent_token(settings) if settings.local_agent else None
    info = {
        "url": url,
        "docs_url": f"{url}/api/docs",
        "bootstrap_admin_key": key,
        "local_machine_id": local_machine[0] if local_machine else None,
    }
    if as_json:
        print(json.dumps(info), flush=True)
    else:
        console.print(f"[bold]agenthub {__version__}[/bold] at [cyan]{url}[/cyan]")
        console.print(f"API docs: [cyan]{info['docs_url']}[/cyan]")
        console.print(f"Data: {settings.data_dir.resolve()}")
        if key:
            console.print(
                f"Admin API key (shown once, keep it): [bold yellow]{key}[/bold yellow]\n"
                f"  curl -H 'Authorization: Bearer {key}' {url}/api/auth/me"
            )
        if local_machine:
            console.print(f"Local node agent: machine {local_machine[0]} in pool default")
    with _local_agent(settings, url, local_machine, log_level):
        _run(host, port, log_level)


def _issue_local_agent_token(settings: Settings) -> tuple[str, str]:
    """Mint this run's token for the local node agent: (machine id, token)."""
    from agenthub.cli.nodes import run_in_unit_of_work
    from agenthub.services.nodes.tokens import issue_local_agent_token

    issued = run_in_unit_of_work(
        settings, lambda session, states: issue_local_agent_token(session, settings, states)
    )
    assert issued.machine_id is not None
    return issued.machine_id, issued.token


@contextlib.contextmanager
def _local_agent(
    settings: Settings, url: str, machine: tuple[str, str] | None, log_level: str
) -> Iterator[None]:
    """Run ``agenthub agent`` beside the hub for as long as the hub runs.

    A separate process, so a busy hub and a busy node do not share one event loop; it retries
    until the hub answers, and the token travels in its environment, not on its command line.
    """
    if machine is None:
        yield
        return
    machine_id, token = machine
    env = {
        **os.environ,
        "AGENTHUB_AGENT_HUB_URL": url,
        "AGENTHUB_AGENT_TOKEN": token,
    }
    work_dir = Path(settings.data_dir).resolve() / "node"
    command = [
        sys.executable,
        "-m",
        "agenthub",
        "agent",
        "--machine-id",
        machine_id,
        "--pool",
        "default",
        "--work-dir",
        str(work_dir),
        "--log-level",
        log_level,
    ]
    child = subprocess.Popen(command, env=env, preexec_fn=die_with_parent)  # noqa: S603 - our own executable
    try:
        yield
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def version(as_json: bool = typer.Option(False, "--json", help=JsonOption)) -> None:
    """Print the version."""
    emit({"version": __version__}, as_json=as_json, title="agenthub")
