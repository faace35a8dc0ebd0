"""``agenthub agent``: run the node agent for this machine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agenthub.cli.output import fail

if TYPE_CHECKING:
    from agenthub.agent.node import NodeAgent

# The hub's own rules for label and taint keys and values, checked here so that a typo fails at
# once with a message instead of as a refused registration.
_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$")
_MAX_VALUE = 253
_MACHINE_ID = re.compile(r"^[0-9a-f]{8}$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` → ``(key, value)``; raises ``ValueError`` with an actionable message."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"label {text!r} must look like key=value")
    _check(key, value, "label")
    return key, value


def _check(key: str, value: str, what: str) -> None:
    if not _KEY.match(key):
        raise ValueError(
            f"{what} key {key!r} must be 1-128 letters, digits, '.', '_', '-' or '/', "
            "starting and ending with a letter or digit"
        )
    if len(value) > _MAX_VALUE:
        raise ValueError(f"{what} value for {key!r} is longer than {_MAX_VALUE} characters")


def parse_taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` (or ``key:Effect``) → ``{"key", "value", "effect"}``.

    Raises ``ValueError`` with an actionable message.
    """
    spec, sep, effect = text.rpartition(":")
    if not sep:
        raise ValueError(f"taint {text!r} must look like key=value:NoSchedule")
    if effect not in _EFFECTS:
        raise ValueError(f"taint effect {effect!r} must be one of {', '.join(_EFFECTS)}")
    key, _, value = spec.partition("=")
    _check(key, value, "taint")
    return {"key": key, "value": value, "effect": effect}


def agent(
    hub_url: str = typer.Option(
        ...,
        "--hub",
        envvar="AGENTHUB_AGENT_HUB_URL",
        help="The hub's base URL, e.g. http://hub.internal:8000.",
    ),
    token: str = typer.Option(
        ...,
        "--token",
        envvar="AGENTHUB_AGENT_TOKEN",
        help="Machine token from `agenthub machine create` (prefer the env var: argv is public).",
        show_default=False,
    ),
    pool: str | None = typer.Option(
        None, "--pool", help="Worker pool to join (default: the token's pool)."
    ),
    machine_id: str | None = typer.Option(
        None,
        "--machine-id",
        help="8 hex characters (default: the token's machine, else derived from host and token).",
    ),
    label: list[str] | None = typer.Option(
        None, "--label", help="Node label key=value (repeatable)."
    ),
    taint: list[str] | None = typer.Option(
        None,
        "--taint",
        help="Node taint key=value:Effect or key:Effect, Effect one of NoSchedule, "
        "PreferNoSchedule, NoExecute (repeatable).",
    ),
    keepalive_interval: float | None = typer.Option(
        None, "--keepalive-interval", help="Seconds between keepalives (default: the hub's)."
    ),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Where the agent keeps its files (default: ~/.agenthub/agent)."
    ),
    hostname: str | None = typer.Option(
        None, "--hostname", help="Host name to report (default: this machine's)."
    ),
    unsafe_no_sandbox: bool = typer.Option(
        False,
        "--unsafe-no-sandbox",
        help="For development only: when bubblewrap is missing, run workloads as plain "
        "processes with this user's full access to the machine.",
    ),
    poll_wait: float = typer.Option(
        20.0,
        "--poll-wait",
        help="Seconds the hub may hold a poll for work open before answering (0-30).",
    ),
    change_journal: bool = typer.Option(
        True,
        "--change-journal/--no-change-journal",
        envvar="AGENTHUB_AGENT_CHANGE_JOURNAL",
        help="Checkpoints of a running workload's workspace look only at what inotify saw change "
        "since the previous one (the one that ends a machine always walks the whole workspace).",
    ),
    log_level: str = typer.Option(
        "info", "--log-level", help="debug, info, warning or error.", case_sensitive=False
    ),
) -> None:
    """Run the node agent: register this machine with the hub, keep it alive and run its work.

    Stops cleanly on SIGTERM or Ctrl-C (its workloads are stopped first). Exits 2 when the hub
    refuses the token.
    """
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    try:
        for text in label or []:
            key, value = parse_label(text)
            if key in labels and labels[key] != value:
                raise ValueError(f"label {key!r} given twice with different values")
            labels[key] = value
        taints = [parse_taint(text) for text in taint or []]
    except ValueError as err:
        fail(str(err), code=2)
    if machine_id is not None and not _MACHINE_ID.match(machine_id):
        fail(f"--machine-id {machine_id!r} must be 8 lowercase hexadecimal characters", code=2)
    if keepalive_interval is not None and keepalive_interval <= 0:
        fail("--keepalive-interval must be a positive number of seconds", code=2)
    if not 0 <= poll_wait <= 30:
        fail("--poll-wait must be between 0 and 30 seconds", code=2)
    if log_level.lower() not in _LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(_LOG_LEVELS)}", code=2)
    if not hub_url.startswith(("http://", "https://")):
        fail(f"--hub {hub_url!r} must be an http:// or https:// URL", code=2)
    if not token.strip():
        fail("--token is empty", code=2)

    import asyncio
    import logging

    from agenthub.agent.node import AgentConfig, NodeAgent

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if log_level.lower() != "debug":
        # httpx logs every request at INFO: one line per keepalive drowns the agent's own log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    config = AgentConfig(
        hub_url=hub_url,
        token=token.strip(),
        pool_name=pool,
        machine_id=machine_id,
        labels=labels,
        taints=taints,
        keepalive_interval_s=keepalive_interval,
        hostname=hostname,
        allow_unsafe=unsafe_no_sandbox,
        poll_wait_s=poll_wait,
        change_journal=change_journal,
    )
    if work_dir is not None:
        config.work_dir = work_dir
    node = NodeAgent(config)
    raise typer.Exit(asyncio.run(_run_until_signalled(node)))


async def _run_until_signalled(node: NodeAgent) -> int:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, node.shutdown)
        except (NotImplementedError, RuntimeError):  # no loop signal support (Windows)
            signal.signal(sig, lambda _signum, _frame: node.shutdown())
    return await node.run()
