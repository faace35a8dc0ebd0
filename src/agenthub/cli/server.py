"""``agenthub serve``, ``agenthub up`` and ``agenthub version``."""

from __future__ import annotations

import asyncio
import json

import typer

from agenthub import __version__
from agenthub.cli.context import database, load_settings, migrate
from agenthub.cli.output import JsonOption, console, emit

HostOption = typer.Option("127.0.0.1", "--host", help="Interface to listen on.")
PortOption = typer.Option(8000, "--port", help="Port to listen on.")
LogLevelOption = typer.Option("info", "--log-level", help="uvicorn log level.")


def _run(host: str, port: int, log_level: str) -> None:
    import uvicorn

    from agenthub.api.app import create_app

    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        ws_ping_interval=None,  # the /ws protocol sends its own ping frames
    )


def serve(host: str = HostOption, port: int = PortOption, log_level: str = LogLevelOption) -> None:
    """Run the hub: all five API surfaces on one port (migrates the database first)."""
    migrate(load_settings())
    _run(host, port, log_level)


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
    info = {"url": url, "docs_url": f"{url}/api/docs", "bootstrap_admin_key": key}
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
    _run(host, port, log_level)


def version(as_json: bool = typer.Option(False, "--json", help=JsonOption)) -> None:
    """Print the version."""
    emit({"version": __version__}, as_json=as_json, title="agenthub")
