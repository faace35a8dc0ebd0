"""The router every surface module uses: it turns a request away before trying its patterns
when no route of its own can match the path."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import Match
from starlette.types import Scope


class SurfaceRouter(APIRouter):
    """An ``APIRouter`` that rejects a path starting with none of its routes' literal prefixes.

    FastAPI tries the included routers in turn, and in each one every route's pattern, with
    some bookkeeping per candidate: finding the route cost up to ~200 us of CPU per request, a
    tenth of a message send and most of a 404. A route's pattern can only match a path that
    starts with the route's path up to its first parameter, so a router none of whose prefixes
    starts the path can match it neither fully nor partly (a 405), and is skipped at once.

    The prefixes are the routes' own paths, so the router must be included at the root (no
    ``prefix=`` in ``include_router``), as ``create_app`` does; under an ASGI ``root_path`` the
    check is skipped.
    """

    _prefixes: tuple[str, ...] = ("",)
    _prefixes_of = -1  # how many routes the prefixes were computed from

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self._prefixes_of != len(self.routes):
            self._prefixes = _literal_prefixes(self)
            self._prefixes_of = len(self.routes)
        if not scope.get("root_path") and not scope["path"].startswith(self._prefixes):
            return Match.NONE, {}
        return super().matches(scope)


def _literal_prefixes(router: APIRouter) -> tuple[str, ...]:
    prefixes: set[str] = set()
    for route in router.routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not path:
            return ("",)  # a mount or a host: anything may match
        prefixes.add(path.split("{", 1)[0])
    return tuple(sorted(prefixes)) or ("",)
