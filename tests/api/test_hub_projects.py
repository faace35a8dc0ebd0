"""Hub projects and budgets through HTTP: create/read/update/list, greediness shares, budget
updates, the error envelope, and who may see which project."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api.hub_support import hub_error, new_project
from tests.support import HubProcess, bearer

pytestmark = pytest.mark.db


async def test_create_read_update_a_project(admin: httpx.AsyncClient) -> None:
    created = await new_project(
        admin, "  alpha  ", greediness=0.8, description="first", resource_budgets={}
    )
    assert set(created) >= {"uuid", "name", "greediness", "initial_checkpoint", "created_at"}
    assert created["name"] == "alpha"
    assert created["greediness"] == 0.8
    assert uuid.UUID(created["initial_checkpoint"])
    assert created["created_at"].endswith("Z")
    project = (await admin.get(f"/api/v1/projects/{created['uuid']}")).json()
    assert project["description"] == "first"
    assert project["status"] == "active"
    assert project["current_checkpoint"] == created["initial_checkpoint"]
    assert project["active_machines"] == 0
    assert project["total_checkpoints"] == 1
    today = project["resource_usage_today"]
    assert set(today) == {"money", "time", "api_calls", "storage"}
    for amounts in today.values():
        assert amounts["used"] == 0
        assert amounts["remaining"] == amounts["allocated"]
        assert amounts["allocated"] > 0

    updated = await admin.put(
        f"/api/v1/projects/{created['uuid']}", json={"greediness": 0.25, "description": "second"}
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["greediness"] == 0.25
    assert body["description"] == "second"
    assert body["name"] == "alpha"
    assert body["updated_at"] >= project["updated_at"]


async def test_own_budget_overrides_the_greediness_share(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "budgeted", greediness=0.1))["uuid"]
    share = (await admin.get(f"/api/v1/projects/{project}")).json()["resource_usage_today"]
    shared_money = share["money"]["allocated"]
    r = await admin.put(
        f"/api/v1/resources/projects/{project}/budget",
        json={"daily_money": 12.5, "daily_api_calls": 77, "daily_time_hours": 3},
    )
    assert r.status_code == 200, r.text
    budget = r.json()
    assert budget["daily_money"] == 12.5
    assert budget["daily_api_calls"] == 77
    assert budget["effective"]["daily_time_hours"] == 3
    today = (await admin.get(f"/api/v1/projects/{project}")).json()["resource_usage_today"]
    assert today["money"]["allocated"] == 12.5
    assert today["api_calls"]["allocated"] == 77
    assert today["time"]["allocated"] == 3
    # null hands the resource back to the greediness share.
    r = await admin.put(f"/api/v1/resources/projects/{project}/budget", json={"daily_money": None})
    assert r.json()["daily_money"] is None
    assert r.json()["effective"]["daily_money"] == pytest.approx(shared_money, rel=0.5)
    hub_error(
        await admin.put(f"/api/v1/resources/projects/{project}/budget", json={"daily_money": -1}),
        400,
        "VALIDATION_ERROR",
    )


async def test_greediness_shares_split_the_hub_budget(hub: HubProcess, admin_key: str) -> None:
    """Shares are greediness / sum(greediness of active projects) of the hub-wide budget."""
    async with httpx.AsyncClient(base_url=hub.url, headers=bearer(admin_key)) as admin:
        listed = (
            await admin.get("/api/v1/projects", params={"active": "true", "limit": 100})
        ).json()
        existing = list(listed["projects"])
        total = sum(p["greediness"] for p in existing)
        a = (await new_project(admin, "share-a", greediness=0.6))["uuid"]
        b = (await new_project(admin, "share-b", greediness=0.2))["uuid"]
        total += 0.8
        money_a = (await admin.get(f"/api/v1/projects/{a}")).json()["resource_usage_today"]
        money_b = (await admin.get(f"/api/v1/projects/{b}")).json()["resource_usage_today"]
        # Another test may add a project meanwhile; the ratio of the two shares holds anyway.
        assert money_a["money"]["allocated"] == pytest.approx(
            3 * money_b["money"]["allocated"], rel=1e-6
        )
        assert money_a["money"]["allocated"] <= 100.0 * 0.6 / total + 1e-6
        # Archiving a project gives its share back.
        r = await admin.put(f"/api/v1/projects/{b}", json={"status": "archived"})
        assert r.json()["status"] == "archived"
        after = (await admin.get(f"/api/v1/projects/{a}")).json()["resource_usage_today"]
        assert after["money"]["allocated"] > money_a["money"]["allocated"]
        archived = (await admin.get(f"/api/v1/projects/{b}")).json()["resource_usage_today"]
        assert archived["money"]["allocated"] == 0


async def test_list_filters_sorts_and_counts(admin: httpx.AsyncClient) -> None:
    names = [f"sorted-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    for name, g in zip(names, (0.3, 0.9, 0.6), strict=True):
        await new_project(admin, name, greediness=g)
    listed = (
        await admin.get(
            "/api/v1/projects", params={"active": "true", "sort": "greediness_desc", "limit": 100}
        )
    ).json()
    assert listed["total_count"] >= 3
    greed = [p["greediness"] for p in listed["projects"]]
    assert greed == sorted(greed, reverse=True)
    ours = [p["name"] for p in listed["projects"] if p["name"] in names]
    assert ours == [names[1], names[2], names[0]]
    summary = listed["projects"][0]
    assert set(summary) >= {"uuid", "name", "greediness", "status", "daily_resource_usage"}
    assert summary["status"] == "active"
    page = (await admin.get("/api/v1/projects", params={"limit": 1})).json()
    assert len(page["projects"]) == 1
    assert page["has_more"] is True
    hub_error(
        await admin.get("/api/v1/projects", params={"sort": "bogus"}), 400, "VALIDATION_ERROR"
    )


async def test_project_errors_use_the_hub_envelope(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    hub_error(
        await admin.post("/api/v1/projects", json={"name": "x", "greediness": 1.5}),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(
        await admin.post("/api/v1/projects", json={"greediness": 0.5}), 400, "VALIDATION_ERROR"
    )
    hub_error(await admin.get(f"/api/v1/projects/{uuid.uuid4()}"), 404, "NOT_FOUND")
    hub_error(
        await admin.put(f"/api/v1/projects/{uuid.uuid4()}", json={"greediness": 0.1}),
        404,
        "NOT_FOUND",
    )
    project = (await new_project(admin, "errs"))["uuid"]
    hub_error(
        await admin.put(f"/api/v1/projects/{project}", json={"status": "deleted"}),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(
        await admin.get(f"/api/v1/resources/projects/{project}", params={"period": "a_year"}),
        400,
        "VALIDATION_ERROR",
    )
    async with httpx.AsyncClient(base_url=hub.url) as anonymous:
        hub_error(await anonymous.get("/api/v1/projects"), 401, "UNAUTHORIZED")
        hub_error(await anonymous.get("/api/v1/hub/status"), 401, "UNAUTHORIZED")


async def test_members_see_their_own_projects_only(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    tenant = str(uuid.uuid4())
    r = await admin.post(
        "/api/auth/keys", json={"name": "tenant-member", "role": "member", "tenant_id": tenant}
    )
    key = r.json()["data"]["key"]
    hidden = (await new_project(admin, "admins-only"))["uuid"]
    async with httpx.AsyncClient(base_url=hub.url, headers=bearer(key)) as member:
        # A member may create a project (in its tenant) but not give it its own budget.
        hub_error(
            await member.post(
                "/api/v1/projects", json={"name": "rich", "resource_budgets": {"daily_money": 1e6}}
            ),
            403,
            "FORBIDDEN",
        )
        own = await member.post("/api/v1/projects", json={"name": "tenant-project"})
        assert own.status_code == 201, own.text
        own_id = own.json()["uuid"]
        listed = (await member.get("/api/v1/projects", params={"limit": 100})).json()
        assert [p["uuid"] for p in listed["projects"]] == [own_id]
        assert listed["total_count"] == 1
        hub_error(await member.get(f"/api/v1/projects/{hidden}"), 404, "NOT_FOUND")
        hub_error(
            await member.put(f"/api/v1/projects/{hidden}", json={"greediness": 1}), 404, "NOT_FOUND"
        )
        hub_error(await member.get(f"/api/v1/resources/projects/{hidden}"), 404, "NOT_FOUND")
        updated = await member.put(f"/api/v1/projects/{own_id}", json={"greediness": 0.9})
        assert updated.status_code == 200
        overview = (await member.get("/api/v1/resources/overview")).json()
        assert overview["system_totals"]["total_projects"] == 1
    # The admin sees the tenant's project too.
    assert (await admin.get(f"/api/v1/projects/{own_id}")).status_code == 200
