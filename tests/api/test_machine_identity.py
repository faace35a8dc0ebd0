"""Every Intelligent Machine has a Collab identity: made at spawn, its access token handed to
the run with the assignment (``AGENTHUB_AI_ID``, ``AGENTHUB_COLLAB_TOKEN``), and good on the
Collab surface only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.api.collab_support import new_ai
from tests.api.hub_support import new_project, spawn
from tests.api.node_support import ScriptedNode
from tests.support import TEST_SECRET, Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def id_hub(backend_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("machine-identity")
    # No identity cache: a retired identity is refused at once (else within its TTL).
    hub = HubProcess(backend.env(tmp / "data", ai_identity_cache_s="0"), tmp / "hub.log")
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def id_key(id_hub: HubProcess) -> str:
    out = run_cli(id_hub.env, "admin", "create-key", "--name", "id-admin", "--json")
    return str(json.loads(out.stdout)["key"])


@pytest.fixture
async def c(id_hub: HubProcess, id_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=id_hub.url, headers=bearer(id_key), timeout=30) as c:
        yield c


async def test_a_machine_run_gets_its_own_collab_identity(
    id_hub: HubProcess, id_key: str, c: httpx.AsyncClient
) -> None:
    node = await ScriptedNode.start(c, id_hub, id_key, "default")
    try:
        project = await new_project(c, "with-identity")
        r = await spawn(c, project["uuid"], "echo hi")
        assert r.status_code == 201, r.text
        machine = r.json()["machine_uuid"]
        poll = (await node.poll(wait_s=5)).json()
        [assignment] = [a for a in poll["assignments"] if machine in a["env"].values()]
        env = assignment["env"]
        ai_id = int(env["AGENTHUB_AI_ID"])
        token = env["AGENTHUB_COLLAB_TOKEN"]
        claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
        assert (claims["kind"], claims["ai_id"], claims["use"]) == ("ai", ai_id, "access")
        # It lasts as long as the run may (time limit + grace + margin), not one hour.
        assert claims["exp"] - claims["iat"] > 3600
        assert env["AGENTHUB_TOKEN"].startswith("ahw_")

        async with httpx.AsyncClient(
            base_url=id_hub.url, headers=bearer(token), timeout=30
        ) as as_machine:
            verified = (await as_machine.post("/api/v1/auth/verify")).json()
            assert verified["ai_id"] == ai_id
            assert verified["ai_name"] == f"machine-{machine.replace('-', '')[:16]}"
            profile = (await as_machine.get(f"/api/v1/ai/{ai_id}")).json()
            assert profile["project"] == "with-identity"
            assert profile["expertise"] == "shell"
            assert profile["online"] is True
            # Collab only: not the Hub's projects, not the Cluster's nodes.
            assert (await as_machine.get("/api/v1/projects")).status_code == 403
            assert (await as_machine.get("/api/nodes")).status_code == 403
            # It messages as itself.
            async with new_ai(id_hub.url) as peer:
                sent = await as_machine.post(
                    "/api/v1/message/send",
                    json={"content": "done with step 1", "target_ai_id": peer.ai_id},
                )
                assert sent.status_code == 201, sent.text
                inbox = (await peer.client.get("/api/v1/message/inbox")).json()
                assert [(m["sender_id"], m["content"]) for m in inbox["messages"]] == [
                    (ai_id, "done with step 1")
                ]
                # A project's machine is not for outsiders to find, message or recruit: its
                # name and project are that project's business.
                hidden = await peer.client.get(f"/api/v1/ai/{ai_id}")
                assert hidden.status_code == 404
                assert hidden.json()["code"] == "AI_NOT_FOUND"
                listed = (await peer.client.get("/api/v1/ai/list", params={"limit": 100})).json()
                assert ai_id not in [a["ai_id"] for a in listed["ais"]]
                reply = await peer.client.post(
                    "/api/v1/message/send", json={"content": "hi", "target_ai_id": ai_id}
                )
                assert reply.status_code == 404
                assert reply.json()["code"] == "AI_NOT_FOUND"
                recruit = await peer.client.post(
                    "/api/v1/collaboration/request",
                    json={"target_ai_id": ai_id, "collaboration_type": "x", "title": "t"},
                )
                assert recruit.status_code == 404
                # The machine sees itself and the open network; an admin sees it.
                seen = (await as_machine.get("/api/v1/ai/list", params={"limit": 100})).json()
                assert {ai_id, peer.ai_id} <= {a["ai_id"] for a in seen["ais"]}
                assert (await c.get(f"/api/v1/ai/{ai_id}")).status_code == 200
        # No one can log in as a machine with a secret: none was ever handed out.
        login = await c.post(
            "/api/v1/auth/login",
            json={"ai_id": ai_id, "ai_name": verified["ai_name"], "secret": ""},
        )
        assert login.status_code == 401

        # The machine ends: its identity is retired with it.
        workload_id, attempt = assignment["workload_id"], assignment["attempt"]
        assert (await node.report(workload_id, attempt, "running")).status_code == 200
        finished = await node.report(workload_id, attempt, "succeeded", exit_code=0)
        assert finished.status_code == 200
        async with httpx.AsyncClient(
            base_url=id_hub.url, headers=bearer(token), timeout=30
        ) as as_machine:
            for _ in range(100):
                r = await as_machine.post("/api/v1/auth/verify")
                if r.status_code == 401:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 401, r.text
            assert r.json()["code"] == "INVALID_TOKEN"
        gone = await c.get(f"/api/v1/ai/{ai_id}")
        assert gone.status_code == 404
        assert gone.json()["code"] == "AI_NOT_FOUND"
    finally:
        await node.close()
