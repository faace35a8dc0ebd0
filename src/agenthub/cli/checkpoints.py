"""``agenthub checkpoint push|pull``: seed a project with a directory, fetch a checkpoint.

Both talk to a running hub over HTTP (``--url``, ``--key`` or ``AGENTHUB_URL``,
``AGENTHUB_API_KEY``) and show progress bars for packing and transfers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agenthub.cli.output import emit, fail

if TYPE_CHECKING:  # rich loads only for the commands that draw progress
    from rich.progress import Progress

app = typer.Typer(help="Upload a directory as a checkpoint, or download one.", no_args_is_help=True)

UrlOption = typer.Option(
    "http://127.0.0.1:8000", "--url", envvar="AGENTHUB_URL", help="The hub's base URL."
)
KeyOption = typer.Option(..., "--key", envvar="AGENTHUB_API_KEY", help="An API key (ah_...).")
JsonHelp = "Print the result as JSON."


def _progress() -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    # On stderr, so that stdout carries only the result (--json stays parseable).
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
    )


@app.command("push")
def push(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="What to upload."),
    project: str = typer.Option(..., "--project", "-p", help="The project's uuid."),
    description: str = typer.Option("", "--description", "-d"),
    url: str = UrlOption,
    key: str = KeyOption,
    as_json: bool = typer.Option(False, "--json", help=JsonHelp),
) -> None:
    """Pack DIRECTORY (minus the default ignores and its .agenthubignore) and make it the
    project's current checkpoint."""
    import tarfile
    import tempfile

    import httpx

    from agenthub.agent.snapshot import scan

    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryFile() as packed:
        # The same rules as a node's snapshot decide what is packed.
        manifest = scan(directory, state_dir=Path(state)).manifest
        total = sum(e["size"] for e in manifest.values() if e.get("type", "file") == "file")
        with _progress() as progress:
            task = progress.add_task("packing", total=total)
            with tarfile.open(fileobj=packed, mode="w:gz") as archive:
                for name in sorted(manifest):
                    archive.add(directory / name, arcname=name, recursive=False)
                    if manifest[name].get("type", "file") == "file":
                        progress.advance(task, manifest[name]["size"])
            size = packed.tell()
            packed.seek(0)
            upload = progress.add_task("uploading", total=size)

            def chunks() -> Iterator[bytes]:
                while chunk := packed.read(1024 * 1024):
                    progress.advance(upload, len(chunk))
                    yield chunk

            try:
                response = httpx.post(
                    f"{url.rstrip('/')}/api/v1/projects/{project}/checkpoints",
                    params={"description": description},
                    content=chunks(),
                    headers={
                        "Authorization": f"Bearer {key}",
                        "Content-Type": "application/gzip",
                    },
                    timeout=600,
                )
            except httpx.HTTPError as err:
                fail(f"cannot reach the hub at {url}: {err}")
    if response.status_code != 201:
        fail(f"the hub refused the upload ({response.status_code}): {response.text}")
    emit(response.json(), as_json=as_json, title="checkpoint created")


@app.command("pull")
def pull(
    checkpoint: str = typer.Argument(..., help="The checkpoint's uuid."),
    directory: Path = typer.Argument(..., help="Where to unpack it (created; must be empty)."),
    url: str = UrlOption,
    key: str = KeyOption,
    as_json: bool = typer.Option(False, "--json", help=JsonHelp),
) -> None:
    """Download a checkpoint's workspace into DIRECTORY."""
    import tarfile
    import tempfile

    import httpx

    if directory.exists() and any(directory.iterdir()):
        fail(f"{directory} is not empty")
    with tempfile.TemporaryFile() as packed:
        try:
            with httpx.stream(
                "GET",
                f"{url.rstrip('/')}/api/v1/checkpoints/{checkpoint}/archive",
                headers={"Authorization": f"Bearer {key}"},
                timeout=600,
            ) as response:
                if response.status_code != 200:
                    response.read()
                    fail(f"the hub refused ({response.status_code}): {response.text}")
                with _progress() as progress:
                    task = progress.add_task("downloading", total=None)
                    for chunk in response.iter_bytes(1024 * 1024):
                        packed.write(chunk)
                        progress.advance(task, len(chunk))
        except httpx.HTTPError as err:
            fail(f"cannot reach the hub at {url}: {err}")
        packed.seek(0)
        directory.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=packed, mode="r:gz") as archive:
            # "data": no absolute paths, no links out of the directory, no devices.
            archive.extractall(directory, filter="data")
            files = sum(1 for m in archive.getmembers() if m.isfile())
    emit({"checkpoint": checkpoint, "directory": str(directory), "files": files}, as_json=as_json)
