"""The baseline server for ``api_baseline.py``: the least an ASGI app served by uvicorn can do.

No framework, no middleware, no routing, no database: every HTTP request gets the same tiny
JSON body. Served with the same uvicorn settings as the hub, it measures what uvicorn, the
event loop, the socket layer and the load generator cost on this machine, so the hub's figures
can be read as multiples of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b'{"status":"ok"}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer every HTTP request with ``200 {"status":"ok"}``; accept lifespan events."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
