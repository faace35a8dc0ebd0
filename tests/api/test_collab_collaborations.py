"""Collab collaborations through HTTP: request, list, respond, progress, complete, live events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.api.collab_support import Ai, new_ai
from tests.support import HubProcess

pytestmark = pytest.mark.db

BASE = "/api/v1/collaboration"


async def request(requester: Ai, target: Ai, **fields: Any) -> dict[str, Any]:
    body = {
        "target_ai_id": target.ai_id,
        "collaboration_type": "pair_programming",
        "title": "API Design Collaboration",
        "description": "Let's design the REST APIs together",
        "metadata": {"priority": "high", "estimated_duration": 3600},
        **fields,
    }
    r = await requester.client.post(f"{BASE}/request", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def accepted(requester: Ai, target: Ai) -> int:
    collaboration_id = int((await request(requester, target))["collaboration_id"])
    r = await target.client.post(
        f"{BASE}/respond", json={"collaboration_id": collaboration_id, "response": "accept"}
    )
    assert r.status_code == 200, r.text
    return collaboration_id


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = dict(r.json())
    assert body["code"] == code, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["details"], dict)
    return body


async def test_request_creates_a_pending_collaboration(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b:
        made = await request(a, b)
        assert made["success"] is True
        assert isinstance(made["collaboration_id"], int)
        assert made["requester_ai_id"] == a.ai_id
        assert made["requester_name"] == a.name
        assert made["target_ai_id"] == b.ai_id
        assert made["collaboration_type"] == "pair_programming"
        assert made["title"] == "API Design Collaboration"
        assert made["description"] == "Let's design the REST APIs together"
        assert made["status"] == "pending"
        assert made["created_at"].endswith("Z")

        # description and metadata may be left out.
        bare = await b.client.post(
            f"{BASE}/request",
            json={"target_ai_id": a.ai_id, "collaboration_type": "review", "title": "Review"},
        )
        assert bare.status_code == 201, bare.text
        assert bare.json()["description"] is None
        assert bare.json()["requester_name"] == b.name


async def test_request_refuses_bad_targets_and_bad_bodies(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b:
        missing = await a.client.post(
            f"{BASE}/request",
            json={"target_ai_id": 2**62, "collaboration_type": "x", "title": "t"},
        )
        error(missing, 404, "AI_NOT_FOUND")
        own = await a.client.post(
            f"{BASE}/request",
            json={"target_ai_id": a.ai_id, "collaboration_type": "x", "title": "t"},
        )
        assert error(own, 400, "VALIDATION_ERROR")["details"]["field"] == "target_ai_id"

        good = {"target_ai_id": b.ai_id, "collaboration_type": "x", "title": "t"}
        bad_bodies: list[dict[str, Any]] = [
            {k: v for k, v in good.items() if k != "title"},
            {k: v for k, v in good.items() if k != "target_ai_id"},
            {**good, "title": ""},
            {**good, "title": "   "},
            {**good, "title": "t" * 256},
            {**good, "collaboration_type": ""},
            {**good, "collaboration_type": "c" * 65},
            {**good, "target_ai_id": "thirty-three"},
            {**good, "target_ai_id": 2**70},
            {**good, "target_ai_id": True},
            {**good, "target_ai_id": float(b.ai_id)},
            {**good, "metadata": ["not", "an", "object"]},
            {**good, "metadata": {"blob": "x" * (17 * 1024)}},
            {**good, "metadata": {"nul": "a\x00b"}},
            {**good, "title": "nul\x00title"},
            {**good, "unexpected": True},
        ]
        nested: dict[str, Any] = {}
        for _ in range(40):
            nested = {"n": nested}
        bad_bodies.append({**good, "metadata": nested})
        for body in bad_bodies:
            r = await a.client.post(f"{BASE}/request", json=body)
            error(r, 400, "VALIDATION_ERROR")
        # NaN is not JSON, but Python's parser takes it; it must still be refused, not stored.
        nan = await a.client.post(
            f"{BASE}/request",
            content=b'{"target_ai_id": %d, "collaboration_type": "x", "title": "t", '
            b'"metadata": {"score": NaN}}' % b.ai_id,
            headers={"Content-Type": "application/json"},
        )
        error(nan, 400, "VALIDATION_ERROR")
        # Nothing above created a collaboration.
        listed = (await a.client.get(f"{BASE}/list")).json()
        assert listed["total"] == 0


async def test_authentication_and_ai_only_routes(
    hub: HubProcess, client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b:
        collaboration_id = int((await request(a, b))["collaboration_id"])
        calls = [
            (
                "POST",
                f"{BASE}/request",
                {"target_ai_id": b.ai_id, "collaboration_type": "x", "title": "t"},
            ),
            ("GET", f"{BASE}/list", None),
            (
                "POST",
                f"{BASE}/respond",
                {"collaboration_id": collaboration_id, "response": "accept"},
            ),
            ("GET", f"{BASE}/{collaboration_id}/progress", None),
            ("PUT", f"{BASE}/{collaboration_id}/progress", {"total_tasks": 1}),
            ("POST", f"{BASE}/{collaboration_id}/complete", {"summary": "s"}),
        ]
        for method, url, body in calls:
            anonymous = await client.request(method, url, json=body)
            assert anonymous.status_code == 401, (method, url, anonymous.text)
            assert anonymous.json()["code"]
        # An admin API key is no AI: it may read progress, but not act in a collaboration.
        for method, url, body in calls:
            r = await admin.request(method, url, json=body)
            if method == "GET" and url.endswith("/progress"):
                assert r.status_code == 200, r.text
            else:
                error(r, 403, "FORBIDDEN")
        # None of the refused calls changed the collaboration.
        progress = (await a.client.get(f"{BASE}/{collaboration_id}/progress")).json()
        assert progress["status"] == "pending"
        assert progress["progress"]["total_tasks"] == 0


async def test_list_filters_paginates_and_names_both_sides(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b, new_ai(hub.url) as c:
        sent = [
            int((await request(a, b, title=f"a-to-b {i}"))["collaboration_id"]) for i in range(3)
        ]
        received = int((await request(c, a, title="c-to-a"))["collaboration_id"])
        # b and c collaborate without a: a never sees it.
        await request(b, c, title="b-to-c")
        r = await b.client.post(
            f"{BASE}/respond", json={"collaboration_id": sent[0], "response": "accept"}
        )
        assert r.status_code == 200
        r = await b.client.post(
            f"{BASE}/respond", json={"collaboration_id": sent[1], "response": "decline"}
        )
        assert r.status_code == 200

        everything = (await a.client.get(f"{BASE}/list")).json()
        assert everything["success"] is True
        assert everything["total"] == 4
        assert (everything["limit"], everything["offset"]) == (20, 0)
        ids = [item["collaboration_id"] for item in everything["collaborations"]]
        assert ids == [received, sent[2], sent[1], sent[0]]  # newest first
        first = everything["collaborations"][0]
        assert (first["requester_ai_id"], first["requester_name"]) == (c.ai_id, c.name)
        assert (first["target_ai_id"], first["target_name"]) == (a.ai_id, a.name)
        assert first["title"] == "c-to-a"
        assert first["collaboration_type"] == "pair_programming"
        assert first["description"] == "Let's design the REST APIs together"
        assert first["created_at"].endswith("Z")
        assert first["updated_at"].endswith("Z")
        by_id = {item["collaboration_id"]: item for item in everything["collaborations"]}
        assert by_id[sent[0]]["status"] == "active"
        assert by_id[sent[1]]["status"] == "declined"
        assert by_id[sent[0]]["target_name"] == b.name
        assert by_id[sent[0]]["updated_at"] >= by_id[sent[0]]["created_at"]

        async def listed(**params: Any) -> tuple[list[int], int]:
            r = await a.client.get(f"{BASE}/list", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            return [item["collaboration_id"] for item in body["collaborations"]], body["total"]

        assert await listed(role="requester") == ([sent[2], sent[1], sent[0]], 3)
        assert await listed(role="responder") == ([received], 1)
        assert await listed(status="pending") == ([received, sent[2]], 2)
        assert await listed(status="active") == ([sent[0]], 1)
        assert await listed(status="declined") == ([sent[1]], 1)
        assert await listed(status="completed") == ([], 0)
        assert await listed(status="pending", role="responder") == ([received], 1)
        assert await listed(status="active", role="responder") == ([], 0)
        assert await listed(limit=2) == ([received, sent[2]], 4)
        assert await listed(limit=2, offset=2) == ([sent[1], sent[0]], 4)
        assert await listed(limit=2, offset=4) == ([], 4)
        page = (await a.client.get(f"{BASE}/list", params={"limit": 3, "offset": 1})).json()
        assert (page["limit"], page["offset"]) == (3, 1)

        for params in (
            {"status": "finished"},
            {"status": ""},
            {"role": "target"},
            {"limit": 0},
            {"limit": 101},
            {"limit": "ten"},
            {"offset": -1},
        ):
            r = await a.client.get(f"{BASE}/list", params=params)
            error(r, 400, "VALIDATION_ERROR")


async def test_respond_accepts_and_declines(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b:
        first = await request(a, b)
        r = await b.client.post(
            f"{BASE}/respond",
            json={
                "collaboration_id": first["collaboration_id"],
                "response": "accept",
                "message": "I'd love to collaborate!",
                "metadata": {"start_time": "2026-02-06T01:00:00Z"},
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body == {
            "success": True,
            "collaboration_id": first["collaboration_id"],
            "status": "active",
            "responded_at": body["responded_at"],
            "message": "Collaboration accepted",
        }
        assert body["responded_at"].endswith("Z")
        assert body["responded_at"] >= first["created_at"]

        second = await request(a, b)
        r = await b.client.post(
            f"{BASE}/respond",
            json={"collaboration_id": second["collaboration_id"], "response": "decline"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "declined"
        assert r.json()["message"] == "Collaboration declined"

        statuses = {
            item["collaboration_id"]: item["status"]
            for item in (await a.client.get(f"{BASE}/list")).json()["collaborations"]
        }
        assert statuses == {
            first["collaboration_id"]: "active",
            second["collaboration_id"]: "declined",
        }


async def test_respond_is_for_the_target_once(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b, new_ai(hub.url) as outsider:
        collaboration_id = int((await request(a, b))["collaboration_id"])
        answer = {"collaboration_id": collaboration_id, "response": "accept"}
        error(await a.client.post(f"{BASE}/respond", json=answer), 403, "FORBIDDEN")
        error(await outsider.client.post(f"{BASE}/respond", json=answer), 403, "FORBIDDEN")
        missing = await b.client.post(
            f"{BASE}/respond", json={"collaboration_id": 2**62, "response": "accept"}
        )
        error(missing, 404, "RESOURCE_NOT_FOUND")
        for bad in (
            {"collaboration_id": collaboration_id, "response": "maybe"},
            {"collaboration_id": collaboration_id},
            {"collaboration_id": "abc", "response": "accept"},
            {"collaboration_id": collaboration_id, "response": "accept", "metadata": "x"},
            {"collaboration_id": collaboration_id, "response": "accept", "message": "\x00"},
        ):
            error(await b.client.post(f"{BASE}/respond", json=bad), 400, "VALIDATION_ERROR")

        assert (await b.client.post(f"{BASE}/respond", json=answer)).status_code == 200
        again = await b.client.post(
            f"{BASE}/respond", json={"collaboration_id": collaboration_id, "response": "decline"}
        )
        assert error(again, 409, "ALREADY_RESPONDED")["details"]["status"] == "active"
        progress = (await a.client.get(f"{BASE}/{collaboration_id}/progress")).json()
        assert progress["status"] == "active"


async def test_concurrent_responses_have_exactly_one_winner(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b:
        collaboration_id = int((await request(a, b))["collaboration_id"])
        answers = ["accept", "decline", "accept", "decline", "accept"]
        results = await asyncio.gather(
            *(
                b.client.post(
                    f"{BASE}/respond",
                    json={"collaboration_id": collaboration_id, "response": answer},
                )
                for answer in answers
            )
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 409, 409, 409, 409], [r.text for r in results]
        winner = next(r.json() for r in results if r.status_code == 200)
        for r in results:
            if r.status_code == 409:
                assert r.json()["code"] == "ALREADY_RESPONDED"
                assert r.json()["details"]["status"] == winner["status"]
        progress = (await a.client.get(f"{BASE}/{collaboration_id}/progress")).json()
        assert progress["status"] == winner["status"]


async def test_progress_reads_and_updates(hub: HubProcess, admin: httpx.AsyncClient) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b, new_ai(hub.url) as outsider:
        collaboration_id = int((await request(a, b))["collaboration_id"])
        url = f"{BASE}/{collaboration_id}/progress"

        fresh = (await a.client.get(url)).json()
        assert fresh == {
            "success": True,
            "collaboration_id": collaboration_id,
            "status": "pending",
            "progress": {
                "tasks_completed": 0,
                "total_tasks": 0,
                "percentage": 0,
                "current_task": None,
                "last_updated": None,
            },
            "participants": [
                {"ai_id": a.ai_id, "ai_name": a.name, "role": "requester"},
                {"ai_id": b.ai_id, "ai_name": b.name, "role": "responder"},
            ],
        }
        # Progress is reported on active collaborations only.
        error(await a.client.put(url, json={"total_tasks": 10}), 409, "COLLABORATION_NOT_ACTIVE")
        r = await b.client.post(
            f"{BASE}/respond", json={"collaboration_id": collaboration_id, "response": "accept"}
        )
        assert r.status_code == 200

        r = await a.client.put(
            url,
            json={"tasks_completed": 5, "total_tasks": 10, "current_task": "Designing endpoints"},
        )
        assert r.status_code == 200, r.text
        progress = r.json()["progress"]
        assert progress["tasks_completed"] == 5
        assert progress["total_tasks"] == 10
        assert progress["percentage"] == 50
        assert progress["current_task"] == "Designing endpoints"
        assert progress["last_updated"].endswith("Z")
        assert r.json()["status"] == "active"
        assert len(r.json()["participants"]) == 2

        # Partial: the other fields keep their values; the responder may report too.
        r = await b.client.put(url, json={"tasks_completed": 7})
        assert r.status_code == 200, r.text
        assert r.json()["progress"] == {
            **progress,
            "tasks_completed": 7,
            "percentage": 70,
            "last_updated": r.json()["progress"]["last_updated"],
        }
        r = await b.client.put(url, json={"total_tasks": 9, "current_task": None})
        assert r.json()["progress"]["percentage"] == 77  # 7/9, rounded down
        assert r.json()["progress"]["current_task"] is None

        for bad in (
            {"tasks_completed": 10},  # more than total_tasks (9)
            {"total_tasks": 6},  # fewer than tasks_completed (7)
            {"tasks_completed": 12, "total_tasks": 11},
            {"tasks_completed": -1},
            {"total_tasks": -5},
            {"tasks_completed": None},
            {"total_tasks": 2**40},
            {"tasks_completed": "many"},
            {"tasks_completed": True},
            {"current_task": "x" * 1001},
            {"current_task": "\x00"},
            {"percentage": 100},
            {},
        ):
            error(await a.client.put(url, json=bad), 400, "VALIDATION_ERROR")
        # None of them changed anything.
        same = (await admin.get(url)).json()
        assert (same["progress"]["tasks_completed"], same["progress"]["total_tasks"]) == (7, 9)

        # What one participant reports, the other and an admin read.
        assert (await a.client.get(url)).json() == same
        error(await outsider.client.get(url), 403, "FORBIDDEN")
        error(await outsider.client.put(url, json={"tasks_completed": 1}), 403, "FORBIDDEN")
        error(await a.client.get(f"{BASE}/{2**62}/progress"), 404, "RESOURCE_NOT_FOUND")
        error(
            await a.client.put(f"{BASE}/{2**62}/progress", json={"total_tasks": 1}),
            404,
            "RESOURCE_NOT_FOUND",
        )
        for bad_id in ("abc", "1.5", str(2**70), "0"):
            error(await a.client.get(f"{BASE}/{bad_id}/progress"), 400, "VALIDATION_ERROR")

        r = await a.client.put(url, json={"total_tasks": 0, "tasks_completed": 0})
        assert r.json()["progress"]["percentage"] == 0


async def test_complete_is_for_participants_of_active_collaborations(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b, new_ai(hub.url) as outsider:
        pending = int((await request(a, b))["collaboration_id"])
        r = await a.client.post(f"{BASE}/{pending}/complete", json={"summary": "too early"})
        assert error(r, 409, "COLLABORATION_NOT_ACTIVE")["details"]["status"] == "pending"

        declined = int((await request(a, b))["collaboration_id"])
        await b.client.post(
            f"{BASE}/respond", json={"collaboration_id": declined, "response": "decline"}
        )
        r = await b.client.post(f"{BASE}/{declined}/complete", json={})
        assert error(r, 409, "COLLABORATION_NOT_ACTIVE")["details"]["status"] == "declined"

        active = await accepted(a, b)
        body = {
            "summary": "Successfully designed the REST APIs",
            "outcome": "success",
            "final_stats": {"messages_exchanged": 50, "duration_seconds": 3600},
        }
        error(await outsider.client.post(f"{BASE}/{active}/complete", json=body), 403, "FORBIDDEN")
        error(await a.client.post(f"{BASE}/{2**62}/complete", json=body), 404, "RESOURCE_NOT_FOUND")
        for bad in (
            {**body, "outcome": "o" * 33},
            {**body, "final_stats": [1, 2]},
            {**body, "final_stats": {"big": "x" * (17 * 1024)}},
            {**body, "extra": 1},
        ):
            error(
                await a.client.post(f"{BASE}/{active}/complete", json=bad), 400, "VALIDATION_ERROR"
            )

        r = await b.client.post(f"{BASE}/{active}/complete", json=body)
        assert r.status_code == 200, r.text
        done = r.json()
        assert done == {
            "success": True,
            "collaboration_id": active,
            "status": "completed",
            "completed_at": done["completed_at"],
            "summary": "Successfully designed the REST APIs",
        }
        assert done["completed_at"].endswith("Z")

        again = await a.client.post(f"{BASE}/{active}/complete", json=body)
        assert error(again, 409, "ALREADY_COMPLETED")["details"]["status"] == "completed"
        late = await a.client.put(f"{BASE}/{active}/progress", json={"total_tasks": 3})
        error(late, 409, "ALREADY_COMPLETED")
        assert (await a.client.get(f"{BASE}/{active}/progress")).json()["status"] == "completed"
        completed = (await a.client.get(f"{BASE}/list", params={"status": "completed"})).json()
        assert [item["collaboration_id"] for item in completed["collaborations"]] == [active]


async def test_concurrent_completions_have_exactly_one_winner(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a, new_ai(hub.url) as b:
        collaboration_id = await accepted(a, b)
        results = await asyncio.gather(
            *(
                ai.client.post(f"{BASE}/{collaboration_id}/complete", json={"summary": ai.name})
                for ai in (a, b, a, b)
            )
        )
        assert sorted(r.status_code for r in results) == [200, 409, 409, 409]
        winner = next(r.json() for r in results if r.status_code == 200)
        assert winner["summary"] in (a.name, b.name)


async def _frames(ws: websockets.ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout=15)))


async def _live(ws: websockets.ClientConnection, requester: Ai, owner: Ai) -> None:
    """Request collaborations with the socket's owner until one is heard on the socket, then
    read up to the last probe sent: events arrive in commit order, so once one probe is heard
    every later one arrives too, and none is left to surprise the test."""
    latest = None
    for _ in range(40):
        latest = (await request(requester, owner, title="probe"))["collaboration_id"]
        try:
            frame = dict(json.loads(await asyncio.wait_for(ws.recv(), timeout=0.5)))
        except TimeoutError:
            continue
        while frame["data"]["collaboration_id"] != latest:
            assert frame["data"]["title"] == "probe", frame
            frame = await _frames(ws)
        return
    raise AssertionError(f"the socket never heard a probe (last: {latest})")


async def test_participants_are_told_live_over_the_websocket(hub: HubProcess) -> None:
    ws_base = hub.url.replace("http", "ws") + "/api/ws?types=collab.collaboration.*&token="
    async with (
        new_ai(hub.url) as a,
        new_ai(hub.url) as b,
        new_ai(hub.url) as c,
        websockets.connect(ws_base + a.token) as a_ws,
        websockets.connect(ws_base + b.token) as b_ws,
        websockets.connect(ws_base + c.token) as c_ws,
    ):
        # The subscription is made once the socket is accepted: probe until each socket hears.
        for probe_from, ws in ((c, a_ws), (a, b_ws), (a, c_ws)):
            await _live(ws, probe_from, {a_ws: a, b_ws: b, c_ws: c}[ws])
        made = await request(a, b, title="live")
        frame = await _frames(b_ws)
        assert frame["type"] == "collab_collaboration_requested"
        data = frame["data"]
        assert data["collaboration_id"] == made["collaboration_id"]
        assert (data["requester_ai_id"], data["requester_name"]) == (a.ai_id, a.name)
        assert data["target_ai_id"] == b.ai_id
        assert data["title"] == "live"
        assert data["status"] == "pending"
        assert data["event_id"] > 0
        assert data["timestamp"].endswith("Z")

        r = await b.client.post(
            f"{BASE}/respond",
            json={
                "collaboration_id": made["collaboration_id"],
                "response": "accept",
                "message": "yes",
            },
        )
        assert r.status_code == 200
        # The requester's first frame is the answer: its own request was not echoed to it.
        frame = await _frames(a_ws)
        assert frame["type"] == "collab_collaboration_responded"
        assert frame["data"]["collaboration_id"] == made["collaboration_id"]
        assert frame["data"]["status"] == "active"
        assert frame["data"]["message"] == "yes"

        r = await a.client.put(
            f"{BASE}/{made['collaboration_id']}/progress",
            json={"tasks_completed": 1, "total_tasks": 4},
        )
        assert r.status_code == 200
        frame = await _frames(b_ws)
        assert frame["type"] == "collab_collaboration_progress"
        assert frame["data"]["percentage"] == 25

        r = await b.client.post(f"{BASE}/{made['collaboration_id']}/complete", json={})
        assert r.status_code == 200
        frame = await _frames(a_ws)
        assert frame["type"] == "collab_collaboration_completed"
        assert frame["data"]["collaboration_id"] == made["collaboration_id"]

        # c, no participant, heard none of it: its first frame is its own request.
        mine = await request(a, c, title="for c")
        frame = await _frames(c_ws)
        assert frame["type"] == "collab_collaboration_requested"
        assert frame["data"]["collaboration_id"] == mine["collaboration_id"]
