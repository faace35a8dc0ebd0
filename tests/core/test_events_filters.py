from __future__ import annotations

import uuid

from agenthub.core.auth import Principal, PrincipalKind, Role
from agenthub.services.events import type_filter, visible_to


def test_type_filter_spellings_and_wildcards() -> None:
    match = type_filter(["node.joined", "api_key_created", "container.*"])
    assert match("node.joined")
    assert match("api_key.created")  # the WebSocket spelling
    assert match("container.started")
    assert not match("node.left")
    assert type_filter(None)("anything")


def test_visibility_by_role_and_scope() -> None:
    project = uuid.uuid4()
    admin = Principal(PrincipalKind.API_KEY, uuid.uuid4(), "a", Role.ADMIN)
    scoped = Principal(PrincipalKind.API_KEY, uuid.uuid4(), "m", Role.MEMBER, project_id=project)
    unscoped = Principal(PrincipalKind.API_KEY, uuid.uuid4(), "u", Role.MEMBER)
    own = {"type": "x", "project_id": str(project), "tenant_id": None}
    other = {"type": "x", "project_id": str(uuid.uuid4()), "tenant_id": None}
    assert visible_to(admin)(own)
    assert visible_to(admin)(other)
    assert visible_to(scoped)(own)
    assert not visible_to(scoped)(other)
    assert not visible_to(unscoped)(own)
