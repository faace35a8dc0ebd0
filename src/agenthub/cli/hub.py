"""``agenthub hub restore``: a hub snapshot into a fresh data dir (and database)."""

from __future__ import annotations

from pathlib import Path

import typer

from agenthub.cli.output import JsonOption, emit, fail

app = typer.Typer(help="Hub snapshots.", no_args_is_help=True)


@app.command("restore")
def restore(
    checkpoint: str = typer.Argument(..., help="The hub checkpoint's uuid."),
    data_dir: Path = typer.Option(..., "--data-dir", help="The restored hub's data dir."),
    database_url: str | None = typer.Option(
        None, "--database-url", help="PostgreSQL to restore a pg_dump snapshot into."
    ),
    as_json: bool = typer.Option(False, "--json", help=JsonOption),
) -> None:
    """Restore CHECKPOINT (taken by POST /api/v1/hub/checkpoint on the hub this environment
    points at) into DATA_DIR: its database, and every blob it references under DATA_DIR/blobs.
    Start the restored hub with AGENTHUB_DATA_DIR=DATA_DIR."""
    import asyncio
    import uuid

    from agenthub.cli.context import database, load_settings
    from agenthub.core.errors import AppError
    from agenthub.services.checkpoints.blobs import build_blob_store
    from agenthub.services.system.snapshots import restore as restore_snapshot

    try:
        snapshot_id = uuid.UUID(checkpoint)
    except ValueError:
        fail(f"{checkpoint!r} is not a uuid")
    settings = load_settings()

    async def run() -> dict[str, object]:
        store = build_blob_store(settings)
        try:
            async with database(settings) as db, db.sessionmaker() as session:
                return await restore_snapshot(
                    session, store, snapshot_id, data_dir=data_dir, database_url=database_url
                )
        finally:
            await store.close()

    try:
        result = asyncio.run(run())
    except AppError as err:
        fail(err.message)
    emit(result, as_json=as_json, title="hub restored")
