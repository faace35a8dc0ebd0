"""Placement in memory: filters, best fit vs spread, capacity never overbooked, fair share."""

from __future__ import annotations

import random
import uuid

import pytest

from agenthub.services.scheduling.placement import (
    BINPACK,
    SPREAD,
    FairQueue,
    NodeSlot,
    Placer,
    Request,
    plan,
)


def node(node_id: str, cpu: int = 4000, memory: int = 8192, gpu: int = 0, **kw: object) -> NodeSlot:
    return NodeSlot(
        id=node_id,
        pool=str(kw.get("pool", "default")),
        cpu_free=cpu,
        memory_free=memory,
        gpu_free=gpu,
        labels=dict(kw.get("labels", {})),  # type: ignore[call-overload]
        taints=list(kw.get("taints", [])),  # type: ignore[call-overload]
        runtimes=frozenset(kw.get("runtimes", ("sandbox",))),  # type: ignore[arg-type]
    )


def req(
    cpu: int = 1000, memory: int = 512, gpu: int = 0, project: str | None = None, **kw: object
) -> Request:
    tolerations = tuple(tuple(sorted(t.items())) for t in kw.get("tolerations", []))  # type: ignore[attr-defined]
    return Request(
        id=uuid.uuid4(),
        project=project,
        priority=int(kw.get("priority", 0)),  # type: ignore[call-overload]
        cpu=cpu,
        memory=memory,
        gpu=gpu,
        pool=str(kw.get("pool", "default")),
        runtime=str(kw.get("runtime", "sandbox")),
        selector=tuple(sorted(dict(kw.get("selector", {})).items())),  # type: ignore[call-overload]
        tolerations=tolerations,
    )


def test_binpack_fills_the_fullest_node_that_fits() -> None:
    placer = Placer([node("big", cpu=8000), node("small", cpu=2000)], BINPACK)
    assert placer.place(req(cpu=1500)).id == "small"  # type: ignore[union-attr]
    assert placer.place(req(cpu=1000)).id == "big"  # type: ignore[union-attr]  # small has 500 left
    assert placer.place(req(cpu=500)).id == "small"  # type: ignore[union-attr]


def test_spread_picks_the_emptiest_node() -> None:
    placer = Placer([node("a", cpu=4000), node("b", cpu=4000)], SPREAD)
    placed = [placer.place(req(cpu=1000)).id for _ in range(4)]  # type: ignore[union-attr]
    assert sorted(placed) == ["a", "a", "b", "b"]


def test_filters_pool_runtime_labels_taints_gpus() -> None:
    nodes = [
        node(
            "gpu",
            gpu=2,
            labels={"zone": "a"},
            taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}],
        ),
        node("docker", runtimes=("sandbox", "docker"), labels={"zone": "b"}),
        node("other-pool", pool="batch"),
    ]
    placer = Placer(nodes)
    assert placer.place(req(runtime="docker")).id == "docker"  # type: ignore[union-attr]
    assert placer.place(req(pool="batch")).id == "other-pool"  # type: ignore[union-attr]
    assert placer.place(req(pool="nowhere")) is None
    # The tainted GPU node takes only what tolerates its taint.
    assert placer.place(req(gpu=1)) is None
    tolerant = [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]
    assert placer.place(req(gpu=1, tolerations=tolerant)).id == "gpu"  # type: ignore[union-attr]
    assert placer.place(req(selector={"zone": "b"})).id == "docker"  # type: ignore[union-attr]
    assert placer.place(req(selector={"zone": "c"})) is None
    exists = [{"key": "gpu", "operator": "Exists", "value": "", "effect": ""}]
    assert placer.place(req(gpu=1, tolerations=exists)).id == "gpu"  # type: ignore[union-attr]
    assert placer.place(req(gpu=1, tolerations=exists)) is None  # both GPUs taken


def test_capacity_is_never_overbooked() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    nodes = [
        node(f"n{i}", cpu=rng.choice([2000, 4000, 8000]), memory=rng.choice([2048, 8192]))
        for i in range(20)
    ]
    capacity = {n.id: (n.cpu_free, n.memory_free) for n in nodes}
    queue = [
        req(cpu=rng.choice([100, 250, 1000, 3000]), memory=rng.choice([64, 512, 2048]))
        for _ in range(2000)
    ]
    for strategy in (BINPACK, SPREAD):
        placer = Placer(
            [node(n.id, cpu=capacity[n.id][0], memory=capacity[n.id][1]) for n in nodes], strategy
        )
        placements = plan(placer, {None: queue}, {}, {})
        used: dict[str, list[int]] = {}
        for request, node_id in placements:
            cpu_mem = used.setdefault(node_id, [0, 0])
            cpu_mem[0] += request.cpu
            cpu_mem[1] += request.memory
        assert placements, strategy
        for node_id, (cpu, memory) in used.items():
            assert cpu <= capacity[node_id][0], (strategy, node_id)
            assert memory <= capacity[node_id][1], (strategy, node_id)
        # Whatever was left unplaced really fits nowhere.
        placed_ids = {r.id for r, _ in placements}
        for request in queue:
            if request.id not in placed_ids:
                assert all(
                    n.cpu_free < request.cpu or n.memory_free < request.memory for n in placer.nodes
                )


def test_fair_share_follows_greediness_over_300_placements() -> None:
    """Projects of greediness 0.2 and 0.8 compete for 10 slots; runs finish oldest first."""
    rng = random.Random(1)  # noqa: S311 - reproducible test data
    greediness = {"a": 0.2, "b": 0.8}
    queues = {p: [req(project=p) for _ in range(400)] for p in greediness}
    placer = Placer([node("n", cpu=10_000, memory=100_000)])
    running: list[Request] = []
    placed = {"a": 0, "b": 0}
    usage: dict[str | None, float] = {"a": 0.0, "b": 0.0}
    positions = dict.fromkeys(greediness, 0)
    while sum(placed.values()) < 300:
        waiting = {p: queues[p][positions[p] :] for p in greediness}
        fair = FairQueue(waiting, dict(greediness), dict(usage))  # type: ignore[arg-type]
        for request in fair:
            if placer.place(request) is None:
                break
            fair.placed(request)
            running.append(request)
            positions[request.project] += 1  # type: ignore[index]
            placed[request.project] += 1  # type: ignore[index]
            usage[request.project] += request.cpu
            if sum(placed.values()) == 300:
                break
        # A random share of the running work finishes, freeing its slots.
        for done in rng.sample(running, k=rng.randint(1, len(running))):
            running.remove(done)
            usage[done.project] -= done.cpu
            placer.nodes[0].cpu_free += done.cpu
            placer.nodes[0].memory_free += done.memory
            placer = Placer(placer.nodes)
    share_a = placed["a"] / 300
    assert share_a == pytest.approx(0.2, abs=0.02), placed


def test_priority_first_within_a_project() -> None:
    low, high = req(priority=0, project="p"), req(priority=5, project="p")
    placer = Placer([node("n", cpu=1000)])
    # The caller orders each project's queue by priority; the fair queue keeps that order.
    placements = plan(placer, {"p": [high, low]}, {}, {})
    assert [r.id for r, _ in placements] == [high.id]
