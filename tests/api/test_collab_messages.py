"""Collab messaging over real HTTP: send (direct and broadcast), inbox read state, sent lists,
soft deletion, full-text search, and live delivery over the WebSocket and SSE streams.

The hub is shared with other modules, so assertions are about this module's own AIs (each
test registers fresh ones) and never about global counts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import websockets
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.collab_support import Ai, new_ai
from tests.support import HubProcess, bearer

pytestmark = pytest.mark.db

SEND = "/api/v1/message/send"
INBOX = "/api/v1/message/inbox"
SENT = "/api/v1/message/sent"
SEARCH = "/api/v1/message/search"


def word() -> str:
    """A random lowercase word: unique search terms that both databases index as one token."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))


async def send(ai: Ai, content: str, **body: Any) -> dict[str, Any]:
    r = await ai.client.post(SEND, json={"content": content, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def get(ai: Ai, path: str, **params: Any) -> dict[str, Any]:
    r = await ai.client.get(path, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    assert body["error"]


@asynccontextmanager
async def ais(hub: HubProcess, count: int) -> AsyncIterator[list[Ai]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(new_ai(hub.url)) for _ in range(count)]


async def test_send_direct_reaches_only_the_target(hub: HubProcess) -> None:
    async with ais(hub, 3) as (a, b, c):
        sent = await send(
            a,
            "Hello from a!",
            target_ai_id=b.ai_id,
            conversation_id=7,
            message_type="greeting",
            metadata={"priority": "normal", "tags": ["greeting"]},
        )
        assert sent["success"] is True
        assert sent["sender_id"] == a.ai_id
        assert sent["sender_name"] == a.name
        assert sent["target_ai_id"] == b.ai_id
        assert sent["conversation_id"] == 7
        assert sent["message_type"] == "greeting"
        assert sent["content"] == "Hello from a!"
        assert sent["metadata"] == {"priority": "normal", "tags": ["greeting"]}
        assert sent["created_at"].endswith("Z")

        inbox = await get(b, INBOX)
        assert [m["message_id"] for m in inbox["messages"]] == [sent["message_id"]]
        item = inbox["messages"][0]
        for key in ("sender_id", "sender_name", "target_ai_id", "conversation_id", "content"):
            assert item[key] == sent[key]
        assert item["metadata"] == sent["metadata"]
        assert item["read"] is False
        assert (inbox["total"], inbox["limit"], inbox["offset"]) == (1, 20, 0)
        # Neither the sender nor a bystander got it.
        assert (await get(a, INBOX))["total"] == 0
        assert (await get(c, INBOX))["total"] == 0


async def test_message_defaults_and_note_to_self(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a:
        sent = await send(a, "remember the milk", target_ai_id=a.ai_id)
        assert sent["message_type"] == "message"
        assert sent["metadata"] == {}
        assert sent["conversation_id"] is None
        inbox = await get(a, INBOX)
        assert [m["message_id"] for m in inbox["messages"]] == [sent["message_id"]]


async def test_broadcast_reaches_every_other_ai(hub: HubProcess) -> None:
    async with ais(hub, 3) as (a, b, c):
        sent = await send(a, "all hands", conversation_id=3)
        assert sent["target_ai_id"] is None
        for other in (b, c):
            inbox = await get(other, INBOX)
            assert [m["message_id"] for m in inbox["messages"]] == [sent["message_id"]]
            assert inbox["messages"][0]["target_ai_id"] is None
            assert inbox["messages"][0]["conversation_id"] == 3
        assert (await get(a, INBOX))["total"] == 0
        assert [m["message_id"] for m in (await get(a, SENT))["messages"]] == [sent["message_id"]]


async def test_inactive_ais_are_neither_targets_nor_broadcast_recipients(hub: HubProcess) -> None:
    async with ais(hub, 3) as (a, b, gone):
        # No route deactivates an AI yet: do it in the hub's database.
        engine = create_async_engine(hub.env["AGENTHUB_DATABASE_URL"])
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE ai_identities SET is_active = :off WHERE id = :id"),
                    {"off": False, "id": gone.ai_id},
                )
            r = await a.client.post(SEND, json={"content": "hi", "target_ai_id": gone.ai_id})
            assert_error(r, 404, "AI_NOT_FOUND")
            broadcast = await send(a, "to everyone still here")
            async with engine.connect() as conn:
                recipients = set(
                    await conn.scalars(
                        sa.text("SELECT recipient_id FROM collab_deliveries WHERE message_id = :m"),
                        {"m": broadcast["message_id"]},
                    )
                )
        finally:
            await engine.dispose()
        assert b.ai_id in recipients
        assert gone.ai_id not in recipients
        assert a.ai_id not in recipients


async def test_send_refuses_bad_input(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a:
        r = await a.client.post(SEND, json={"content": "hi", "target_ai_id": 2**62})
        assert_error(r, 404, "AI_NOT_FOUND")
        bad_bodies: list[Any] = [
            {},
            {"content": ""},
            {"content": "   \n"},
            {"content": "x" * (64 * 1024 + 1)},
            {"content": "nul \x00 inside"},
            {"content": "hi", "message_type": ""},
            {"content": "hi", "message_type": "t" * 33},
            {"content": "hi", "target_ai_id": 2**64},
            {"content": "hi", "target_ai_id": "b"},
            {"content": "hi", "conversation_id": 0},
            {"content": "hi", "metadata": ["not", "an", "object"]},
            {"content": "hi", "metadata": {"k": "nul\x00"}},
            {"content": "hi", "metadata": {"big": "x" * 20_000}},
            {"content": "hi", "unexpected": 1},
            [1, 2],
        ]
        for body in bad_bodies:
            r = await a.client.post(SEND, json=body)
            assert_error(r, 400, "VALIDATION_ERROR")
        # A lone surrogate, only expressible as a JSON escape.
        r = await a.client.post(
            SEND,
            content=b'{"content": "bad \\ud800 text"}',
            headers={"content-type": "application/json"},
        )
        assert_error(r, 400, "VALIDATION_ERROR")
        r = await a.client.post(
            SEND, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_error(r, 400, "VALIDATION_ERROR")
        assert (await get(a, SENT))["total"] == 0


async def test_messaging_needs_an_ai_token(
    hub: HubProcess, client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    for method, path in (
        ("POST", SEND),
        ("GET", INBOX),
        ("GET", SENT),
        ("GET", SEARCH + "?q=x"),
        ("DELETE", "/api/v1/message/1"),
    ):
        r = await client.request(method, path, json={"content": "x"} if method == "POST" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["code"]
    # An admin API key is no AI: it cannot send, read an inbox or delete.
    assert_error(await admin.post(SEND, json={"content": "x"}), 403, "FORBIDDEN")
    assert_error(await admin.get(INBOX), 403, "FORBIDDEN")
    assert_error(await admin.get(SENT), 403, "FORBIDDEN")
    assert_error(await admin.delete("/api/v1/message/1"), 403, "FORBIDDEN")


async def test_inbox_marks_read_and_counts_unread(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        first = await send(a, "one", target_ai_id=b.ai_id)
        second = await send(a, "two", target_ai_id=b.ai_id)
        assert (await get(b, INBOX, unread_only="true"))["unread_count"] == 2
        # That read marked both read: it reported them unread (their state before it).
        again = await get(b, INBOX)
        assert [m["read"] for m in again["messages"]] == [True, True]
        assert again["unread_count"] == 0

        third = await send(a, "three", target_ai_id=b.ai_id)
        page = await get(b, INBOX, limit=1)
        assert [(m["message_id"], m["read"]) for m in page["messages"]] == [
            (third["message_id"], False)
        ]
        assert (page["total"], page["unread_count"]) == (3, 1)
        assert (await get(b, INBOX, unread_only="true"))["total"] == 0
        everything = await get(b, INBOX)
        assert [m["message_id"] for m in everything["messages"]] == [
            third["message_id"],
            second["message_id"],
            first["message_id"],
        ]
        assert all(m["read"] for m in everything["messages"])


async def test_inbox_only_marks_the_returned_page(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        ids = [(await send(a, f"m{i}", target_ai_id=b.ai_id))["message_id"] for i in range(3)]
        page = await get(b, INBOX, limit=2)
        assert [m["message_id"] for m in page["messages"]] == ids[:0:-1]
        left = await get(b, INBOX, unread_only="true")
        assert [m["message_id"] for m in left["messages"]] == [ids[0]]
        assert (left["total"], left["unread_count"]) == (1, 1)


async def test_inbox_conversation_filter_and_pagination(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        ids = []
        for i in range(5):
            conversation = 41 if i % 2 == 0 else 42
            made = await send(a, f"m{i}", target_ai_id=b.ai_id, conversation_id=conversation)
            ids.append(made["message_id"])
        in_41 = await get(b, INBOX, conversation_id=41)
        assert [m["message_id"] for m in in_41["messages"]] == [ids[4], ids[2], ids[0]]
        assert in_41["total"] == 3
        assert all(m["conversation_id"] == 41 for m in in_41["messages"])
        # The unread count is the whole inbox's, not the filter's.
        assert in_41["unread_count"] == 5

        newest_first = ids[::-1]
        pages = [await get(b, INBOX, limit=2, offset=offset) for offset in (0, 2, 4)]
        assert [m["message_id"] for p in pages for m in p["messages"]] == newest_first
        assert {p["total"] for p in pages} == {5}
        assert [(p["limit"], p["offset"]) for p in pages] == [(2, 0), (2, 2), (2, 4)]
        for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"conversation_id": "x"}):
            assert_error(await b.client.get(INBOX, params=params), 400, "VALIDATION_ERROR")


async def test_sent_lists_newest_first(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        direct = await send(a, "direct", target_ai_id=b.ai_id, metadata={"n": 1})
        broadcast = await send(a, "broadcast")
        await send(b, "not a's", target_ai_id=a.ai_id)
        listed = await get(a, SENT)
        assert listed["success"] is True
        assert [m["message_id"] for m in listed["messages"]] == [
            broadcast["message_id"],
            direct["message_id"],
        ]
        assert listed["total"] == 2
        first = listed["messages"][1]
        assert first["sender_name"] == a.name
        assert first["target_ai_id"] == b.ai_id
        assert first["metadata"] == {"n": 1}
        page = await get(a, SENT, limit=1, offset=1)
        assert [m["message_id"] for m in page["messages"]] == [direct["message_id"]]
        assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)


async def test_delete_is_for_the_sender_and_hides_everywhere(hub: HubProcess) -> None:
    async with ais(hub, 3) as (a, b, c):
        term = word()
        gone = await send(a, f"secret {term}", target_ai_id=b.ai_id)
        kept = await send(a, f"public {term}", target_ai_id=b.ai_id)
        path = f"/api/v1/message/{gone['message_id']}"

        for other in (b, c):
            r = await other.client.delete(path)
            assert_error(r, 403, "FORBIDDEN")
            assert r.json()["error"] == "Not authorized to delete this message"

        r = await a.client.delete(path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True
        assert body["message_id"] == gone["message_id"]
        assert body["deleted_at"].endswith("Z")

        assert [m["message_id"] for m in (await get(b, INBOX))["messages"]] == [kept["message_id"]]
        assert (await get(b, INBOX))["total"] == 1
        assert [m["message_id"] for m in (await get(a, SENT))["messages"]] == [kept["message_id"]]
        for ai in (a, b):
            found = await get(ai, SEARCH, q=term)
            assert [m["message_id"] for m in found["messages"]] == [kept["message_id"]]

        assert_error(await a.client.delete(path), 404, "RESOURCE_NOT_FOUND")
        assert_error(await b.client.delete(path), 404, "RESOURCE_NOT_FOUND")
        assert_error(await a.client.delete("/api/v1/message/0"), 404, "RESOURCE_NOT_FOUND")
        r = await a.client.delete(f"/api/v1/message/{2**62}")
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
        assert_error(await a.client.delete("/api/v1/message/abc"), 400, "VALIDATION_ERROR")
        assert_error(await a.client.delete(f"/api/v1/message/{2**64}"), 400, "VALIDATION_ERROR")


async def replayed_messages(ai: Ai) -> set[int]:
    """The message ids of the ``collab.message`` events the event log lets ``ai`` read back."""
    found: set[int] = set()
    after = 0
    while True:
        page = (await get(ai, "/api/events", after_id=after, types="collab.message", limit=1000))[
            "data"
        ]
        found |= {e["data"]["message_id"] for e in page["events"]}
        if len(page["events"]) < 1000:
            return found
        after = page["last_id"]


async def test_event_log_replays_no_more_than_the_inbox_holds(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        early = await send(a, "to all, before c registered")
        gone = await send(a, "to b, deleted later", target_ai_id=b.ai_id)
        kept = await send(a, "to b, kept", target_ai_id=b.ai_id)
        async with new_ai(hub.url) as c:
            late = await send(a, "to all, after c registered")
            to_c = await send(b, "to c", target_ai_id=c.ai_id)
            assert (
                await a.client.delete(f"/api/v1/message/{gone['message_id']}")
            ).status_code == 200
            ours = {m["message_id"] for m in (early, gone, kept, late, to_c)}

            # Each AI reads back exactly what its inbox holds of these: a deleted message and a
            # broadcast from before the AI existed are not in the log for it either.
            for ai, expected in (
                (b, {early["message_id"], kept["message_id"], late["message_id"]}),
                (c, {late["message_id"], to_c["message_id"]}),
                (a, set()),  # a sender does not replay its own messages
            ):
                inbox = {m["message_id"] for m in (await get(ai, INBOX, limit=100))["messages"]}
                assert inbox & ours == expected
                assert (await replayed_messages(ai)) & ours == expected


async def test_deleted_unread_message_leaves_the_unread_count(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        made = await send(a, "oops", target_ai_id=b.ai_id)
        assert (await a.client.delete(f"/api/v1/message/{made['message_id']}")).status_code == 200
        inbox = await get(b, INBOX)
        assert (inbox["total"], inbox["unread_count"], inbox["messages"]) == (0, 0, [])


async def test_search_finds_words_with_stemming(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        term = word()
        hit = await send(a, f"We will deploy {term} tonight", target_ai_id=b.ai_id)
        await send(a, f"Nothing to see about {term}", target_ai_id=b.ai_id)
        await send(a, "We will deploy something else", target_ai_id=b.ai_id)

        found = await get(a, SEARCH, q=f"deploying {term}")
        assert [m["message_id"] for m in found["messages"]] == [hit["message_id"]]
        assert found["total"] == 1
        item = found["messages"][0]
        assert (item["sender_id"], item["sender_name"]) == (a.ai_id, a.name)
        assert item["content"] == hit["content"]
        assert item["created_at"] == hit["created_at"]
        # Case does not matter, and every word must occur.
        assert (await get(b, SEARCH, q=f"DEPLOY {term.upper()}"))["total"] == 1
        assert (await get(b, SEARCH, q=f"{term} absentword"))["total"] == 0


async def test_search_is_newest_first_and_paginated(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        term = word()
        ids = [(await send(a, f"{term} {i}", target_ai_id=b.ai_id))["message_id"] for i in range(3)]
        pages = [await get(b, SEARCH, q=term, limit=2, offset=o) for o in (0, 2)]
        assert [m["message_id"] for p in pages for m in p["messages"]] == ids[::-1]
        assert [p["total"] for p in pages] == [3, 3]


@pytest.mark.parametrize(
    "q",
    [
        '"foo* OR (bar',
        "NEAR(a b)",
        "content: x",
        "-x ^y",
        "'; DROP TABLE collab_messages; --",
        '"""',
        "***",
        "a AND OR NOT",
        "\\",
        "🙂 ☃",
    ],
)
async def test_search_survives_query_syntax(hub: HubProcess, q: str) -> None:
    async with new_ai(hub.url) as a:
        r = await a.client.get(SEARCH, params={"q": q})
        assert r.status_code == 200, r.text
        assert r.json()["total"] >= 0


async def test_search_special_characters_still_match_words(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        term = word()
        made = await send(a, f"foo {term} bar", target_ai_id=b.ai_id)
        found = await get(b, SEARCH, q=f'"foo* ({term}) "bar^')
        assert [m["message_id"] for m in found["messages"]] == [made["message_id"]]


async def test_search_scope(hub: HubProcess, admin: httpx.AsyncClient) -> None:
    async with ais(hub, 3) as (a, b, outsider):
        term = word()
        private = await send(a, f"between us {term}", target_ai_id=b.ai_id)
        for ai in (a, b):
            found = await get(ai, SEARCH, q=term)
            assert [m["message_id"] for m in found["messages"]] == [private["message_id"]]
        assert (await get(outsider, SEARCH, q=term))["total"] == 0
        # A broadcast is found by the other AIs, who received it.
        loud = await send(a, f"hear ye {term}")
        outsider_hits = await get(outsider, SEARCH, q=term)
        assert [m["message_id"] for m in outsider_hits["messages"]] == [loud["message_id"]]

        r = await admin.get(SEARCH, params={"q": term})
        assert r.status_code == 200, r.text
        assert [m["message_id"] for m in r.json()["messages"]] == [
            loud["message_id"],
            private["message_id"],
        ]
        member_key = (await admin.post("/api/auth/keys", json={"name": "msg-member"})).json()[
            "data"
        ]["key"]
        async with httpx.AsyncClient(base_url=hub.url, headers=bearer(member_key)) as member:
            assert_error(await member.get(SEARCH, params={"q": term}), 403, "FORBIDDEN")


async def test_search_filters(hub: HubProcess) -> None:
    async with ais(hub, 2) as (a, b):
        term = word()
        note = await send(a, f"{term} note", target_ai_id=b.ai_id, message_type="note")
        plain = await send(a, f"{term} plain", target_ai_id=b.ai_id)

        by_type = await get(b, SEARCH, q=term, message_type="note")
        assert [m["message_id"] for m in by_type["messages"]] == [note["message_id"]]
        assert by_type["messages"][0]["message_type"] == "note"

        created = datetime.fromisoformat(plain["created_at"])
        today = created.date().isoformat()
        both = [plain["message_id"], note["message_id"]]
        windows: list[tuple[dict[str, str], list[int]]] = [
            ({"date_from": today, "date_to": today}, both),
            ({"date_to": (created.date() - timedelta(days=1)).isoformat()}, []),
            ({"date_from": (created.date() + timedelta(days=1)).isoformat()}, []),
            ({"date_from": note["created_at"], "date_to": plain["created_at"]}, both),
            ({"date_from": (created + timedelta(hours=1)).isoformat()}, []),
            ({"date_to": (created - timedelta(hours=1)).replace(tzinfo=None).isoformat()}, []),
            ({"date_from": (created - timedelta(minutes=5)).isoformat()}, both),
        ]
        for params, expected in windows:
            found = await get(b, SEARCH, q=term, **params)
            assert [m["message_id"] for m in found["messages"]] == expected, params
            assert found["total"] == len(expected)


async def test_search_refuses_bad_parameters(hub: HubProcess) -> None:
    async with new_ai(hub.url) as a:
        bad: list[dict[str, Any]] = [
            {},
            {"q": ""},
            {"q": "   "},
            {"q": "x" * 501},
            {"q": "nul\x00"},
            {"q": "x", "date_from": "yesterday"},
            {"q": "x", "date_to": "2026-13-01"},
            {"q": "x", "date_from": "0001-01-01T00:00:00+05:00"},
            {"q": "x", "date_from": "2026-02-07", "date_to": "2026-02-06"},
            {"q": "x", "message_type": "t" * 33},
            {"q": "x", "limit": 101},
        ]
        for params in bad:
            assert_error(await a.client.get(SEARCH, params=params), 400, "VALIDATION_ERROR")
        r = await a.client.get(SEARCH, params={"q": "x", "date_to": "9999-12-31"})
        assert r.status_code == 200, r.text


# Live delivery ----------------------------------------------------------------------------


async def ws_messages(ws: websockets.ClientConnection) -> AsyncIterator[dict[str, Any]]:
    """The ``collab_message`` frames' data, as they arrive."""
    while True:
        frame = json.loads(await ws.recv())
        assert frame["type"] == "collab_message", frame
        yield frame["data"]


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The ``collab.message`` events' data from a text/event-stream, as they arrive."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
            continue
        if fields.get("event") == "collab.message":
            yield json.loads(fields["data"])["data"]
        fields = {}


async def wait_live(
    stream: AsyncIterator[dict[str, Any]], probe: Callable[[str], Awaitable[object]]
) -> None:
    """Send probes until one arrives: the subscription is then in place (no fixed sleep).
    Then read up to the last probe sent: events arrive in commit order, so once one probe is
    heard every later one arrives too, and none is left to surprise the test."""
    # One read stays pending across probes: cancelling it would close the stream's generator.
    reading: asyncio.Future[dict[str, Any]] | None = None
    for attempt in range(40):
        marker = f"probe-{attempt}-{word()}"
        await probe(marker)
        reading = reading or asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait({reading}, timeout=0.5)
        if not done:
            continue
        data, reading = reading.result(), None
        async with asyncio.timeout(15):
            while data["content"] != marker:
                assert data["content"].startswith("probe-"), data
                data = await anext(stream)
        return
    if reading is not None:
        reading.cancel()
    raise AssertionError("the stream never delivered a probe")


async def collect_until(
    stream: AsyncIterator[dict[str, Any]], sentinel: str
) -> list[dict[str, Any]]:
    """Every message up to and including the one carrying ``sentinel``. Events are published
    in commit order, so a message committed before the sentinel, if delivered, is here."""
    seen = []
    async with asyncio.timeout(15):
        async for data in stream:
            seen.append(data)
            if data["content"] == sentinel:
                return seen
    raise AssertionError("stream ended")


async def test_websocket_delivers_direct_and_broadcast_messages(hub: HubProcess) -> None:
    async with ais(hub, 3) as (a, b, c):
        url = hub.url.replace("http", "ws") + f"/api/ws?token={c.token}&types=collab.message"
        async with websockets.connect(url) as ws:
            live = ws_messages(ws)
            await wait_live(live, lambda m: send(a, m, target_ai_id=c.ai_id))
            direct = await send(
                a, "for c", target_ai_id=c.ai_id, conversation_id=9, metadata={"k": "v"}
            )
            broadcast = await send(b, "for everyone")
            await send(a, "for b only", target_ai_id=b.ai_id)
            await send(c, "c's own broadcast")
            sentinel = await send(a, "sentinel " + word(), target_ai_id=c.ai_id)
            seen = await collect_until(live, sentinel["content"])
    assert [m["message_id"] for m in seen] == [
        direct["message_id"],
        broadcast["message_id"],
        sentinel["message_id"],
    ]
    first = seen[0]
    for key in (
        "sender_id",
        "sender_name",
        "target_ai_id",
        "conversation_id",
        "message_type",
        "content",
        "metadata",
        "created_at",
    ):
        assert first[key] == direct[key], key
    assert first["event_id"] > 0
    assert first["timestamp"].endswith("Z")
    assert seen[1]["target_ai_id"] is None
    assert seen[1]["sender_name"] == b.name


async def test_sse_stream_delivers_messages(hub: HubProcess) -> None:
    async with (
        ais(hub, 3) as (a, b, c),
        httpx.AsyncClient(base_url=hub.url, headers=bearer(b.token), timeout=30) as http,
        http.stream("GET", "/api/stream/events", params={"types": "collab.message"}) as response,
    ):
        assert response.status_code == 200
        live = sse_messages(response)
        await wait_live(live, lambda m: send(a, m, target_ai_id=b.ai_id))
        await send(a, "for c only", target_ai_id=c.ai_id)
        direct = await send(c, "for b " + word(), target_ai_id=b.ai_id)
        seen = await collect_until(live, direct["content"])
    assert [m["message_id"] for m in seen] == [direct["message_id"]]
    assert seen[0]["sender_id"] == c.ai_id


async def _orchestration_messages(ws: websockets.ClientConnection) -> AsyncIterator[dict[str, Any]]:
    """The ``new_message`` frames of the Orchestration ``/ws`` (pings skipped)."""
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "ping":
            continue
        assert frame["type"] == "new_message", frame
        yield frame["data"]


async def test_orchestration_ws_delivers_an_ais_messages(hub: HubProcess) -> None:
    """An AI on ``/ws`` gets its messages without subscribing, and only its own."""
    async with ais(hub, 3) as (a, b, c):
        url = hub.url.replace("http", "ws") + f"/ws?token={c.token}"
        async with websockets.connect(url) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "connection_established"
            live = _orchestration_messages(ws)
            await wait_live(live, lambda m: send(a, m, target_ai_id=c.ai_id))
            direct = await send(b, "to c on /ws", target_ai_id=c.ai_id)
            await send(a, "between a and b", target_ai_id=b.ai_id)
            sentinel = await send(a, "sentinel " + word(), target_ai_id=c.ai_id)
            seen = await collect_until(live, sentinel["content"])
    assert [m["message_id"] for m in seen] == [direct["message_id"], sentinel["message_id"]]
    assert seen[0]["sender_id"] == b.ai_id
    assert seen[0]["content"] == "to c on /ws"


async def _true_counts(hub: HubProcess, ai_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Each inbox counted the slow way, from the deliveries themselves."""
    engine = create_async_engine(hub.env["AGENTHUB_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT d.recipient_id, count(*), "
                    "sum(CASE WHEN d.read_at IS NULL THEN 1 ELSE 0 END) "
                    "FROM collab_deliveries d JOIN collab_messages m ON m.id = d.message_id "
                    "WHERE m.deleted_at IS NULL AND d.recipient_id IN "
                    f"({', '.join(str(i) for i in ai_ids)}) GROUP BY d.recipient_id"
                )
            )
            found = {int(r[0]): (int(r[1]), int(r[2])) for r in rows}
    finally:
        await engine.dispose()
    return {ai_id: found.get(ai_id, (0, 0)) for ai_id in ai_ids}


async def test_inbox_counts_stay_exact_under_concurrent_sends_reads_and_deletes(
    hub: HubProcess,
) -> None:
    """The counts an inbox read reports are kept by the database as messages arrive, are read
    and are deleted; racing all three must leave them equal to counting the deliveries."""
    rng = secrets.SystemRandom()
    async with ais(hub, 4) as team:
        ids = [ai.ai_id for ai in team]
        sent: list[tuple[Ai, int]] = []

        async def sender(me: Ai) -> None:
            for i in range(12):
                if i % 4 == 3:
                    made = await send(me, f"to all {i}")
                else:
                    target = rng.choice([ai for ai in team if ai is not me])
                    made = await send(me, f"hello {i}", target_ai_id=target.ai_id)
                sent.append((me, made["message_id"]))

        async def reader(me: Ai) -> None:
            for _ in range(8):
                await get(me, INBOX, limit=rng.choice([1, 3, 20]), unread_only=rng.random() < 0.5)

        async def deleter() -> None:
            for _ in range(10):
                await asyncio.sleep(0.01)
                if sent:
                    owner, message_id = sent.pop(rng.randrange(len(sent)))
                    r = await owner.client.delete(f"/api/v1/message/{message_id}")
                    assert r.status_code == 200, r.text

        await asyncio.gather(*(sender(ai) for ai in team), *(reader(ai) for ai in team), deleter())
        truth = await _true_counts(hub, ids)
        for ai in team:
            # A page of 1 marks at most one message read: the counts are from before it.
            inbox = await get(ai, INBOX, limit=1)
            assert (inbox["total"], inbox["unread_count"]) == truth[ai.ai_id]
            unread = await get(ai, INBOX, limit=1, unread_only=True)
            expected_unread = truth[ai.ai_id][1] - (
                1 if inbox["messages"] and not inbox["messages"][0]["read"] else 0
            )
            assert (unread["total"], unread["unread_count"]) == (expected_unread, expected_unread)
        assert sum(total for total, _ in truth.values()) > 0
