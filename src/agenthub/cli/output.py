"""Printing for the CLI: Rich for people, ``--json`` for programs."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

JsonOption = "Print machine-readable JSON."


def emit(data: dict[str, Any], *, as_json: bool, title: str | None = None) -> None:
    if as_json:
        print(json.dumps(data, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in data.items():
        table.add_row(str(key), "" if value is None else str(value))
    console.print(table)


def fail(message: str, code: int = 1) -> None:
    import typer

    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)
