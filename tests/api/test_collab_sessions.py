"""Collab sessions through HTTP: create, read with activity stats, end, and an AI's history;
who may see what, and the 4xx answers to bad input."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.api.collab_support import new_ai
from tests.support import HubProcess

pytestmark = pytest.mark.db

IDENTIFIER = re.compile(r"^[0-9a-f]{7}$")
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
ZERO_STATS = {
    "thoughts_generated": 0,
    "insights_shared": 0,
    "responses_sent": 0,
    "collaborations_initiated": 0,
    "messages_sent": 0,
}


def collab_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = dict(r.json())
    assert body["code"] == code, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["details"], dict)
    return body


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def nested(depth: int) -> dict[str, Any]:
    """A JSON object nesting ``depth`` levels (the outermost object is level 1)."""
    value: dict[str, Any] = {"leaf": [1]}
    for _ in range(depth - 2):
        value = {"a": value}
    return value


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/session/create", json={"session_type": "autonomous", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def end(client: httpx.AsyncClient, session_id: int, **body: Any) -> httpx.Response:
    return await client.request("DELETE", f"/api/v1/session/{session_id}", json=body or None)


async def test_create_returns_a_short_identifier_and_echoes_metadata(hub: HubProcess) -> None:
    metadata = {"task": "API design", "collaborators": [32, 33], "nested": {"ok": True}}
    async with new_ai(hub.url) as ai:
        made = await create(ai.client, project="cloudbrain", metadata=metadata)
        assert made["success"] is True
        assert isinstance(made["session_id"], int)
        assert IDENTIFIER.match(made["session_identifier"]), made
        assert (made["ai_id"], made["ai_name"]) == (ai.ai_id, ai.name)
        assert (made["session_type"], made["project"]) == ("autonomous", "cloudbrain")
        assert made["metadata"] == metadata
        assert ISO_Z.match(made["created_at"])

        bare = await create(ai.client)
        assert (bare["project"], bare["metadata"]) == (None, {})
        assert bare["session_id"] != made["session_id"]
        assert bare["session_identifier"] != made["session_identifier"]

        got = (await ai.client.get(f"/api/v1/session/{made['session_id']}")).json()
        assert got["metadata"] == metadata
        assert got["session_identifier"] == made["session_identifier"]
        assert got["created_at"] == made["created_at"]


async def session_events(admin: httpx.AsyncClient, session_id: int) -> list[dict[str, Any]]:
    """The event log's ``collab.session.*`` events about one session, oldest first."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await admin.get(
            "/api/events", params={"after_id": after, "types": "collab.session.*", "limit": 1000}
        )
        assert r.status_code == 200, r.text
        page = r.json()["data"]
        found += [e for e in page["events"] if e["data"]["session_id"] == session_id]
        if len(page["events"]) < 1000:
            return found
        after = page["last_id"]


async def test_a_new_session_is_active_with_zero_stats(hub: HubProcess) -> None:
    async with new_ai(hub.url) as ai:
        made = await create(ai.client, project="p")
        r = await ai.client.get(f"/api/v1/session/{made['session_id']}")
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["success"] is True
        assert got["status"] == "active"
        assert got["ended_at"] is None
        assert (got["ai_id"], got["ai_name"], got["project"]) == (ai.ai_id, ai.name, "p")
        assert got["stats"] == ZERO_STATS
        assert (got["summary"], got["final_stats"]) == (None, None)


async def test_stats_count_the_ais_collaborations_within_the_session(hub: HubProcess) -> None:
    async with new_ai(hub.url) as ai, new_ai(hub.url) as peer:

        async def request_collaboration(by: httpx.AsyncClient, target: int) -> None:
            r = await by.post(
                "/api/v1/collaboration/request",
                json={"target_ai_id": target, "collaboration_type": "pairing", "title": "t"},
            )
            assert r.status_code == 201, r.text

        # Before the session: outside its window.
        await request_collaboration(ai.client, peer.ai_id)
        made = await create(ai.client)
        await request_collaboration(ai.client, peer.ai_id)
        await request_collaboration(ai.client, peer.ai_id)
        # Requested by someone else: not this AI's activity.
        await request_collaboration(peer.client, ai.ai_id)
        url = f"/api/v1/session/{made['session_id']}"
        stats = (await ai.client.get(url)).json()["stats"]
        assert stats == {**ZERO_STATS, "collaborations_initiated": 2}

        assert (await end(ai.client, made["session_id"])).status_code == 200
        # After the end: outside the window too.
        await request_collaboration(ai.client, peer.ai_id)
        assert (await ai.client.get(url)).json()["stats"] == stats


async def test_stats_count_the_ais_own_live_messages_within_the_session(hub: HubProcess) -> None:
    async with new_ai(hub.url) as ai, new_ai(hub.url) as peer:

        async def send(by: httpx.AsyncClient, message_type: str, target: int | None) -> int:
            body: dict[str, Any] = {"message_type": message_type, "content": message_type}
            if target is not None:
                body["target_ai_id"] = target
            r = await by.post("/api/v1/message/send", json=body)
            assert r.status_code == 201, r.text
            return int(r.json()["message_id"])

        # Before the session: outside its window.
        await send(ai.client, "thought", peer.ai_id)
        made = await create(ai.client)
        url = f"/api/v1/session/{made['session_id']}"
        for message_type in ("thought", "thought", "insight", "response", "message", "question"):
            await send(ai.client, message_type, peer.ai_id)
        await send(ai.client, "insight", None)  # a broadcast is the AI's activity too
        deleted = await send(ai.client, "thought", peer.ai_id)
        # Sent by someone else (to this AI): not this AI's activity.
        await send(peer.client, "thought", ai.ai_id)
        await send(peer.client, "response", None)

        expected = {
            "thoughts_generated": 3,
            "insights_shared": 2,
            "responses_sent": 1,
            "collaborations_initiated": 0,
            "messages_sent": 8,
        }
        assert (await ai.client.get(url)).json()["stats"] == expected
        # A deleted message no longer counts.
        assert (await ai.client.delete(f"/api/v1/message/{deleted}")).status_code == 200
        expected = {**expected, "thoughts_generated": 2, "messages_sent": 7}
        assert (await ai.client.get(url)).json()["stats"] == expected

        assert (await end(ai.client, made["session_id"])).status_code == 200
        # After the end: outside the window too.
        await send(ai.client, "thought", peer.ai_id)
        assert (await ai.client.get(url)).json()["stats"] == expected


async def test_only_the_owner_and_admins_may_read_a_session(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    async with new_ai(hub.url) as owner, new_ai(hub.url) as other:
        made = await create(owner.client)
        url = f"/api/v1/session/{made['session_id']}"
        collab_error(await other.client.get(url), 403, "FORBIDDEN")
        by_admin = await admin.get(url)
        assert by_admin.status_code == 200, by_admin.text
        assert by_admin.json()["ai_id"] == owner.ai_id
        assert by_admin.json()["stats"] == ZERO_STATS


async def test_unknown_session_is_404(hub: HubProcess, admin: httpx.AsyncClient) -> None:
    async with new_ai(hub.url) as ai:
        missing = 2**62
        collab_error(await ai.client.get(f"/api/v1/session/{missing}"), 404, "RESOURCE_NOT_FOUND")
        collab_error(await admin.get(f"/api/v1/session/{missing}"), 404, "RESOURCE_NOT_FOUND")
        collab_error(await end(ai.client, missing), 404, "RESOURCE_NOT_FOUND")


async def test_ending_stores_the_summary_and_final_stats_once(hub: HubProcess) -> None:
    final_stats = {"thoughts_generated": 37, "insights_shared": 37, "responses_sent": 17}
    async with new_ai(hub.url) as ai:
        made = await create(ai.client)
        r = await end(ai.client, made["session_id"], summary="Done well", final_stats=final_stats)
        assert r.status_code == 200, r.text
        ended = r.json()
        assert ended == {
            "success": True,
            "session_id": made["session_id"],
            "ended_at": ended["ended_at"],
            "summary": "Done well",
        }
        assert ISO_Z.match(ended["ended_at"])
        assert parse(ended["ended_at"]) >= parse(made["created_at"])

        got = (await ai.client.get(f"/api/v1/session/{made['session_id']}")).json()
        assert got["status"] == "ended"
        assert got["ended_at"] == ended["ended_at"]
        assert got["summary"] == "Done well"
        assert got["final_stats"] == final_stats
        # The counted stats stay what the hub saw, whatever the AI reported.
        assert got["stats"] == ZERO_STATS

        again = collab_error(
            await end(ai.client, made["session_id"], summary="twice"), 409, "SESSION_ENDED"
        )
        assert again["details"] == {"session_id": made["session_id"], "ended_at": ended["ended_at"]}
        # The second attempt changed nothing.
        kept = (await ai.client.get(f"/api/v1/session/{made['session_id']}")).json()
        assert (kept["summary"], kept["ended_at"]) == ("Done well", ended["ended_at"])


async def test_ending_needs_no_body_and_is_for_the_owner_or_an_admin(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    async with new_ai(hub.url) as owner, new_ai(hub.url) as other:
        first = await create(owner.client)
        second = await create(owner.client)

        collab_error(await end(other.client, first["session_id"]), 403, "FORBIDDEN")
        still = (await owner.client.get(f"/api/v1/session/{first['session_id']}")).json()
        assert still["status"] == "active"

        bare = await owner.client.delete(f"/api/v1/session/{first['session_id']}")
        assert bare.status_code == 200, bare.text
        assert bare.json()["summary"] is None

        by_admin = await end(admin, second["session_id"], summary="closed by an admin")
        assert by_admin.status_code == 200, by_admin.text
        got = (await owner.client.get(f"/api/v1/session/{second['session_id']}")).json()
        assert (got["status"], got["summary"], got["final_stats"]) == (
            "ended",
            "closed by an admin",
            None,
        )

        started, ended = await session_events(admin, second["session_id"])
        assert started["type"] == "collab.session.started"
        assert started["actor"].startswith("ai:")
        assert started["data"] == {
            "session_id": second["session_id"],
            "session_identifier": second["session_identifier"],
            "ai_id": owner.ai_id,
            "session_type": "autonomous",
            "project": None,
        }
        assert ended["type"] == "collab.session.ended"
        assert ended["actor"].startswith("api_key:")
        assert ended["data"] == {
            "session_id": second["session_id"],
            "session_identifier": second["session_identifier"],
            "ai_id": owner.ai_id,
            "ended_at": by_admin.json()["ended_at"],
        }
        # Refused attempts leave no trace in the log.
        assert [e["type"] for e in await session_events(admin, first["session_id"])] == [
            "collab.session.started",
            "collab.session.ended",
        ]


async def test_history_is_newest_first_paginated_with_durations(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    async with new_ai(hub.url) as ai, new_ai(hub.url) as other:
        made = [await create(ai.client, session_type=f"kind-{i}") for i in range(5)]
        await create(other.client)
        assert (await end(ai.client, made[1]["session_id"])).status_code == 200
        url = f"/api/v1/session/{ai.ai_id}/history"

        r = await ai.client.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        assert (page["success"], page["total"], page["limit"], page["offset"]) == (True, 5, 20, 0)
        newest_first = [m["session_id"] for m in reversed(made)]
        assert [s["session_id"] for s in page["sessions"]] == newest_first
        created = [parse(s["created_at"]) for s in page["sessions"]]
        assert created == sorted(created, reverse=True)
        by_id = {s["session_id"]: s for s in page["sessions"]}
        for m in made:
            item = by_id[m["session_id"]]
            assert item["session_identifier"] == m["session_identifier"]
            assert item["session_type"] == m["session_type"]
            assert item["project"] is None
            assert isinstance(item["duration_seconds"], int)
            assert item["duration_seconds"] >= 0
        ended = by_id[made[1]["session_id"]]
        assert ended["status"] == "ended"
        assert ended["duration_seconds"] == int(
            (parse(ended["ended_at"]) - parse(ended["created_at"])).total_seconds()
        )
        assert {by_id[m["session_id"]]["status"] for m in made if m is not made[1]} == {"active"}
        assert all(by_id[m["session_id"]]["ended_at"] is None for m in made if m is not made[1])

        second = (await ai.client.get(url, params={"limit": 2, "offset": 2})).json()
        assert (second["total"], second["limit"], second["offset"]) == (5, 2, 2)
        assert [s["session_id"] for s in second["sessions"]] == newest_first[2:4]
        past_end = (await ai.client.get(url, params={"limit": 2, "offset": 2**63 - 1})).json()
        assert (past_end["sessions"], past_end["total"]) == ([], 5)
        # Beyond what a database can take as an OFFSET: a 400, not a 500.
        too_far = await ai.client.get(url, params={"limit": 2, "offset": 2**63})
        assert too_far.status_code == 400, too_far.text
        assert too_far.json()["code"] == "VALIDATION_ERROR"

        by_admin = (await admin.get(url, params={"limit": 100})).json()
        assert [s["session_id"] for s in by_admin["sessions"]] == newest_first


async def test_history_is_private_and_needs_a_known_ai(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    async with new_ai(hub.url) as ai, new_ai(hub.url) as other:
        await create(ai.client)
        collab_error(
            await other.client.get(f"/api/v1/session/{ai.ai_id}/history"), 403, "FORBIDDEN"
        )
        empty = (await other.client.get(f"/api/v1/session/{other.ai_id}/history")).json()
        assert (empty["sessions"], empty["total"]) == ([], 0)
        collab_error(await ai.client.get(f"/api/v1/session/{2**62}/history"), 404, "AI_NOT_FOUND")
        collab_error(await admin.get(f"/api/v1/session/{2**62}/history"), 404, "AI_NOT_FOUND")
        for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
            collab_error(
                await ai.client.get(f"/api/v1/session/{ai.ai_id}/history", params=params),
                400,
                "VALIDATION_ERROR",
            )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"session_type": ""},
        {"session_type": "   "},
        {"session_type": "x" * 33},
        {"session_type": 7},
        {"session_type": "a", "project": "p" * 129},
        {"session_type": "a", "metadata": [1, 2]},
        {"session_type": "a", "metadata": "text"},
        {"session_type": "a", "metadata": {"blob": "x" * (16 * 1024)}},
        {"session_type": "a", "metadata": nested(33)},
        {"session_type": "a", "unknown": 1},
        {"session_type": "a\x00b"},
        {"session_type": "a", "project": "p\x00"},
        {"session_type": "a", "metadata": {"k": "v\x00"}},
        {"session_type": "a", "metadata": {"k\x00": "v"}},
    ],
)
async def test_bad_create_bodies_are_400(hub: HubProcess, body: dict[str, Any]) -> None:
    async with new_ai(hub.url) as ai:
        collab_error(
            await ai.client.post("/api/v1/session/create", json=body), 400, "VALIDATION_ERROR"
        )
        history = (await ai.client.get(f"/api/v1/session/{ai.ai_id}/history")).json()
        assert history["total"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"session_type": "a", "metadata": {"n": NaN}}',
        b'{"session_type": "a", "metadata": {"n": Infinity}}',
        b'{"session_type": "a\\ud800"}',
        b'{"session_type": "a", "metadata": {"k": "\\udc00"}}',
        # Deep enough to break the response's serialization, were it stored.
        b'{"session_type": "a", "metadata": ' + b'{"a": ' * 300 + b"1" + b"}" * 301,
        b'{"session_type": "a", "metadata": {"a": ' + b"[" * 32 + b"]" * 32 + b"}}",
        # Deeper than the JSON parser goes.
        b'{"session_type": "a", "metadata": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001,
        b'{"session_type": "a"',
        b"null",
    ],
)
async def test_json_the_databases_cannot_hold_is_400(hub: HubProcess, raw: bytes) -> None:
    async with new_ai(hub.url) as ai:
        r = await ai.client.post(
            "/api/v1/session/create", content=raw, headers={"Content-Type": "application/json"}
        )
        collab_error(r, 400, "VALIDATION_ERROR")


async def test_json_at_the_bounds_is_kept_as_sent(hub: HubProcess) -> None:
    deepest = nested(32)
    largest = {"blob": "x" * (16 * 1024 - len('{"blob":""}'))}
    # A literal backslash before "u0000" is text, not a NUL.
    escaped = {"path": "C:\\u0000\\dir", "k\\u0000": [1, 2.5, None, "\u00e9\U0001f600"]}
    async with new_ai(hub.url) as ai:
        for metadata in (deepest, largest, escaped):
            made = await create(ai.client, metadata=metadata)
            assert made["metadata"] == metadata
            url = f"/api/v1/session/{made['session_id']}"
            assert (await ai.client.get(url)).json()["metadata"] == metadata
            assert (
                await end(ai.client, made["session_id"], final_stats=metadata)
            ).status_code == 200
            assert (await ai.client.get(url)).json()["final_stats"] == metadata


async def test_bad_end_bodies_are_400_and_leave_the_session_active(hub: HubProcess) -> None:
    async with new_ai(hub.url) as ai:
        made = await create(ai.client)
        url = f"/api/v1/session/{made['session_id']}"
        for body in (
            {"summary": "s" * 10_001},
            {"final_stats": [1]},
            {"final_stats": {"blob": "x" * (16 * 1024)}},
            {"final_stats": {"k": "\x00"}},
            {"final_stats": {"n": float("nan")}},
            {"final_stats": nested(33)},
            {"summary": "a\x00"},
            {"summary": 5},
            {"other": 1},
            b"[]",
            b'"summary"',
            b"{",
        ):
            # Encoded here: httpx refuses to send NaN, which Python's JSON parser accepts.
            r = await ai.client.request(
                "DELETE",
                url,
                content=body if isinstance(body, bytes) else json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            collab_error(r, 400, "VALIDATION_ERROR")
        assert (await ai.client.get(url)).json()["status"] == "active"


async def test_ids_must_be_positive_64_bit_integers(hub: HubProcess) -> None:
    async with new_ai(hub.url) as ai:
        for bad in ("abc", "1.5", "0", "-3", str(2**63), str(10**30)):
            collab_error(await ai.client.get(f"/api/v1/session/{bad}"), 400, "VALIDATION_ERROR")
            collab_error(await end(ai.client, bad), 400, "VALIDATION_ERROR")  # type: ignore[arg-type]
            collab_error(
                await ai.client.get(f"/api/v1/session/{bad}/history"), 400, "VALIDATION_ERROR"
            )


async def test_callers_must_be_authenticated_and_only_ais_open_sessions(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    body = {"session_type": "autonomous"}
    missing = collab_error(
        await client.post("/api/v1/session/create", json=body), 401, "MISSING_CREDENTIALS"
    )
    assert "Authorization" in missing["error"]
    collab_error(await client.get("/api/v1/session/1"), 401, "MISSING_CREDENTIALS")
    collab_error(await client.delete("/api/v1/session/1"), 401, "MISSING_CREDENTIALS")
    collab_error(await client.get("/api/v1/session/1/history"), 401, "MISSING_CREDENTIALS")
    collab_error(
        await client.get("/api/v1/session/1", headers={"Authorization": "Bearer not-a-jwt"}),
        401,
        "INVALID_TOKEN",
    )
    # An admin API key is not an AI: it may read and end sessions, not open one.
    collab_error(await admin.post("/api/v1/session/create", json=body), 403, "FORBIDDEN")


async def test_concurrent_creates_and_ends(hub: HubProcess) -> None:
    async with new_ai(hub.url) as ai:
        made = await asyncio.gather(*(create(ai.client) for _ in range(20)))
        assert len({m["session_identifier"] for m in made}) == 20
        assert len({m["session_id"] for m in made}) == 20

        target = made[0]["session_id"]
        results = await asyncio.gather(
            *(end(ai.client, target, summary=f"attempt {i}") for i in range(10))
        )
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] + [409] * 9, [r.text for r in results]
        winner = next(r.json() for r in results if r.status_code == 200)
        got = (await ai.client.get(f"/api/v1/session/{target}")).json()
        assert (got["summary"], got["ended_at"]) == (winner["summary"], winner["ended_at"])
