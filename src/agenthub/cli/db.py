"""``agenthub db``: schema migrations."""

from __future__ import annotations

import typer

from agenthub.cli.context import load_settings, migrate
from agenthub.cli.output import JsonOption, emit

app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(as_json: bool = typer.Option(False, "--json", help=JsonOption)) -> None:
    """Bring the database schema up to date (serve and up do this on start too)."""
    from agenthub.db.migrate import heads

    settings = load_settings()
    migrate(settings)
    emit(
        {"database": _redacted(settings.resolved_database_url), "revision": ",".join(heads())},
        as_json=as_json,
        title="schema up to date",
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
