"""The ASGI application: five surfaces, one domain model, one port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from agenthub import __version__
from agenthub.api.cluster import auth as cluster_auth
from agenthub.api.cluster import events as cluster_events
from agenthub.api.cluster import health as cluster_health
from agenthub.api.cluster import machine_tokens as cluster_machine_tokens
from agenthub.api.cluster import nodes as cluster_nodes
from agenthub.api.cluster import workloads as cluster_workloads
from agenthub.api.collab import ais as collab_ais
from agenthub.api.collab import auth as collab_auth
from agenthub.api.collab import collaborations as collab_collaborations
from agenthub.api.collab import messages as collab_messages
from agenthub.api.collab import sessions as collab_sessions
from agenthub.api.gateway import machines as gateway_machines
from agenthub.api.hub import checkpoints as hub_checkpoints
from agenthub.api.hub import experiments as hub_experiments
from agenthub.api.hub import health as hub_health
from agenthub.api.hub import machines as hub_machines
from agenthub.api.hub import projects as hub_projects
from agenthub.api.hub import resources as hub_resources
from agenthub.api.metrics import HttpMetrics
from agenthub.api.middleware import HubMiddleware, error_context
from agenthub.api.node import checkpoints as node_checkpoints
from agenthub.api.node import work as node_work
from agenthub.api.orchestration import ws as orchestration_ws
from agenthub.api.surfaces import render_error
from agenthub.core.errors import AppError, ErrorKind, NotFound, Unavailable, ValidationFailed
from agenthub.core.settings import Settings
from agenthub.core.tasks import cancel_and_wait
from agenthub.services.nodes import reaper
from agenthub.services.runtime import build_runtime
from agenthub.services.system import housekeeping

log = logging.getLogger(__name__)
SHUTDOWN_WAIT_S = 5.0

OPENAPI_TAGS = [
    {
        "name": "hub",
        "description": "Hub surface: Intelligent Machines, projects, checkpoints, "
        "resources, hub status (`/api/v1`).",
    },
    {
        "name": "orchestration",
        "description": "Orchestration surface: tasks, models, agents, "
        "workflows (`/api/v1`), and the `/ws` protocol.",
    },
    {"name": "gateway", "description": "Gateway surface: worker machines (`/api/v1/machine`)."},
    {
        "name": "node",
        "description": "Work protocol of node agents (`/api/v1/node`): long-poll for "
        "assignments, report status, usage and logs. Machine token; Gateway error envelope.",
    },
    {
        "name": "collab",
        "description": "Collab surface: AI identities, sessions, messaging, "
        "collaborations (`/api/v1`).",
    },
    {
        "name": "cluster",
        "description": "Cluster surface: nodes, workloads, auth, health, "
        "events and metrics (`/api`).",
    },
]


def create_app(settings: Settings) -> FastAPI:
    runtime = build_runtime(settings)
    metrics = HttpMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.bus.start()
        controllers = [
            asyncio.create_task(housekeeping.run_forever(runtime), name="housekeeping"),
            asyncio.create_task(
                reaper.run_forever(
                    runtime.db, runtime.bus, runtime.nodes, settings.node_reaper_interval_s
                ),
                name="node-reaper",
            ),
            asyncio.create_task(runtime.scheduler.run_forever(), name="scheduler"),
            asyncio.create_task(runtime.machines.run_forever(), name="machine-controller"),
            asyncio.create_task(runtime.experiments.run_forever(), name="experiments"),
        ]
        try:
            yield
        finally:
            # Bounded: a controller stuck in I/O (a database call that does not answer its
            # cancel) must not keep the process from shutting down.
            stuck = await cancel_and_wait(controllers, SHUTDOWN_WAIT_S)
            for task in stuck:
                log.warning(
                    "controller %s did not stop within %ss", task.get_name(), SHUTDOWN_WAIT_S
                )
            for task in controllers:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("controller %s failed: %r", task.get_name(), task.exception())
            await runtime.close()

    app = FastAPI(
        title="agenthub",
        version=__version__,
        summary="One open control plane for fleets of AI agents and the machines they run on.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.add_middleware(HubMiddleware, runtime=runtime, metrics=metrics)
    _install_error_handlers(app)

    app.include_router(hub_health.router)
    app.include_router(hub_projects.router)
    app.include_router(hub_machines.router)
    app.include_router(hub_resources.router)
    app.include_router(hub_checkpoints.router)
    app.include_router(hub_experiments.router)
    app.include_router(orchestration_ws.router)
    app.include_router(collab_auth.router)
    app.include_router(collab_ais.router)
    app.include_router(collab_sessions.router)
    app.include_router(collab_messages.router)
    app.include_router(collab_collaborations.router)
    app.include_router(cluster_auth.router)
    app.include_router(cluster_health.router)
    app.include_router(cluster_events.router)
    app.include_router(gateway_machines.router)
    app.include_router(cluster_nodes.router)
    app.include_router(cluster_machine_tokens.router)
    app.include_router(cluster_workloads.router)
    app.include_router(node_work.router)
    app.include_router(node_checkpoints.router)
    return app


def app_from_environment() -> FastAPI:
    """The app built from ``AGENTHUB_*`` settings: what each ``serve --workers N`` process runs."""
    from agenthub.core.settings import get_settings

    return create_app(get_settings())


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        return render_error(request.url.path, exc, error_context(request.scope))

    @app.exception_handler(RedisError)
    async def redis_error(request: Request, exc: RedisError) -> Response:
        # Redis holds shared state (TTLs, limits); its outage is a 503, not a bug of ours.
        log.warning("Redis error serving %s: %s", request.url.path, exc)
        err = Unavailable("A shared state store (Redis) is unavailable; try again shortly.")
        return render_error(request.url.path, err, error_context(request.scope))

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> Response:
        if not exc.connection_invalidated:
            raise exc  # a bug of ours: the middleware logs it and answers 500
        # The connection broke (the database restarted or is unreachable); the pool has been
        # invalidated, so a retry gets a fresh connection.
        log.warning("database connection lost serving %s: %s", request.url.path, exc.orig)
        err = Unavailable("The database connection was lost; try again shortly.")
        return render_error(request.url.path, err, error_context(request.scope))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors(), exclude={"url", "ctx", "input"})
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        message = f"Invalid request: {where}: {first.get('msg', 'invalid value')}"
        err = ValidationFailed(message)
        return render_error(request.url.path, err, error_context(request.scope, errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err: AppError
        if exc.status_code == 404:
            err = NotFound(f"No route for {request.method} {request.url.path}.")
        elif exc.status_code == 405:
            err = AppError(
                f"Method {request.method} is not allowed on {request.url.path}.",
                kind=ErrorKind.METHOD_NOT_ALLOWED,
                headers=dict(exc.headers or {}),
            )
        else:
            kind = next(
                (k for k in ErrorKind if k.status_code == exc.status_code), ErrorKind.VALIDATION
            )
            err = AppError(str(exc.detail), kind=kind, headers=dict(exc.headers or {}))
        return render_error(request.url.path, err, error_context(request.scope))
