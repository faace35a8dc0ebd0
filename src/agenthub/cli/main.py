"""The ``agenthub`` command."""

from __future__ import annotations

import typer

from agenthub.cli import admin, agent, checkpoints, db, hub, nodes, server, user

app = typer.Typer(
    name="agenthub",
    help="agenthub: one open control plane for fleets of AI agents and their machines.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("serve")(server.serve)
app.command("up")(server.up)
app.command("version")(server.version)
app.command("agent")(agent.agent)
app.add_typer(db.app, name="db")
app.add_typer(admin.app, name="admin")
app.add_typer(user.app, name="user")
app.add_typer(nodes.pool_app, name="pool")
app.add_typer(nodes.machine_app, name="machine")
app.add_typer(checkpoints.app, name="checkpoint")
app.add_typer(hub.app, name="hub")
