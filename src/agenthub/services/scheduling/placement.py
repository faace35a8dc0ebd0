"""Placement in memory: filter nodes, score them, and serve projects by fair share.

Pure functions and classes over plain data, so the scheduler's database pass stays short and
this part can be tested and measured on its own. A pass builds one :class:`Placer` from the
nodes' free capacity and one :class:`FairQueue` from the queue, then asks the placer for a node
for each request the fair queue hands out.

Filtering depends only on a request's *constraints* (pool, runtime, node selector,
tolerations, whether it needs GPUs), so eligible nodes are computed once per distinct set of
constraints; each such set keeps its nodes sorted by free CPU, so best fit is a binary search.
"""

from __future__ import annotations

import bisect
import heapq
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from agenthub.services.scheduling.spec import tolerates

BINPACK, SPREAD = "binpack", "spread"
STRATEGIES = (BINPACK, SPREAD)
# Taints that keep work away unless tolerated (PreferNoSchedule is only a preference).
HARD_EFFECTS = ("NoSchedule", "NoExecute")
DEFAULT_GREEDINESS = 0.5
MIN_GREEDINESS = 0.01  # a project of greediness 0 still moves, just last


@dataclass
class NodeSlot:
    """A schedulable node and what it has left."""

    id: str
    pool: str
    cpu_free: int
    memory_free: int
    gpu_free: int
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    runtimes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Request:
    id: uuid.UUID
    project: str | None
    priority: int
    cpu: int
    memory: int
    gpu: int
    pool: str
    runtime: str
    selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[tuple[tuple[str, str], ...], ...] = ()

    @property
    def constraints(self) -> tuple[object, ...]:
        return (self.pool, self.runtime, self.selector, self.tolerations, self.gpu > 0)


def eligible(node: NodeSlot, request: Request) -> bool:
    """The filter, apart from capacity: pool, runtime, labels, taints, GPUs."""
    if node.pool != request.pool or request.runtime not in node.runtimes:
        return False
    if any(node.labels.get(k) != v for k, v in request.selector):
        return False
    tolerations = [dict(t) for t in request.tolerations]
    for taint in node.taints:
        if taint.get("effect") in HARD_EFFECTS and not tolerates(tolerations, taint):
            return False
    return not (request.gpu and node.gpu_free <= 0)


class Placer:
    """Chooses a node per request and books its capacity, so no node is overbooked."""

    def __init__(self, nodes: Iterable[NodeSlot], strategy: str = BINPACK) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        self.nodes = list(nodes)
        self.strategy = strategy
        # constraints -> sorted [(cpu_free, node index)] of the nodes that pass the filter
        self._by_constraints: dict[tuple[object, ...], list[tuple[int, int]]] = {}
        # node index -> the sorted lists it is in, to update them when its capacity drops
        self._memberships: dict[int, list[list[tuple[int, int]]]] = {}

    def _candidates(self, request: Request) -> list[tuple[int, int]]:
        key = request.constraints
        found = self._by_constraints.get(key)
        if found is None:
            found = sorted(
                (node.cpu_free, i) for i, node in enumerate(self.nodes) if eligible(node, request)
            )
            self._by_constraints[key] = found
            for _, i in found:
                self._memberships.setdefault(i, []).append(found)
        return found

    def place(self, request: Request) -> NodeSlot | None:
        """The node ``request`` goes to (its capacity already deducted), or ``None``."""
        candidates = self._candidates(request)
        if not candidates:
            return None
        if self.strategy == BINPACK:
            # The fullest node that still fits: keeps large holes for large requests.
            start = bisect.bisect_left(candidates, (request.cpu, -1))
            order: Iterator[int] = iter(range(start, len(candidates)))
        else:
            # The emptiest node first: spreads load (and failure domains) across nodes.
            order = iter(range(len(candidates) - 1, -1, -1))
        for position in order:
            cpu_free, index = candidates[position]
            if cpu_free < request.cpu:
                return None  # spread walks down from the largest: nothing further fits
            node = self.nodes[index]
            if node.memory_free >= request.memory and node.gpu_free >= request.gpu:
                self._book(index, request)
                return node
        return None

    def _book(self, index: int, request: Request) -> None:
        node = self.nodes[index]
        old = (node.cpu_free, index)
        node.cpu_free -= request.cpu
        node.memory_free -= request.memory
        node.gpu_free -= request.gpu
        new = (node.cpu_free, index)
        for sorted_list in self._memberships.get(index, []):
            del sorted_list[bisect.bisect_left(sorted_list, old)]
            bisect.insort(sorted_list, new)


class FairQueue:
    """Hands out queued requests so that, while demand exceeds capacity, each project's share
    of placed capacity follows its greediness.

    The next request comes from the project whose placed CPU divided by its greediness is
    smallest (weighted fair queueing on a virtual clock that starts at what each project
    already runs); within a project, higher priority first, then older first — the order the
    caller's lists are in.
    """

    def __init__(
        self,
        queues: dict[str | None, list[Request]],
        greediness: dict[str | None, float],
        usage: dict[str | None, float],
    ) -> None:
        self._queues = {p: iter(q) for p, q in queues.items()}
        self._weight = {
            p: max(MIN_GREEDINESS, greediness.get(p, DEFAULT_GREEDINESS)) for p in queues
        }
        self._usage = {p: float(usage.get(p, 0.0)) for p in queues}
        self._heap = [(self._usage[p] / self._weight[p], n, p) for n, p in enumerate(queues)]
        heapq.heapify(self._heap)

    def __iter__(self) -> Iterator[Request]:
        while self._heap:
            _, order, project = heapq.heappop(self._heap)
            request = next(self._queues[project], None)
            if request is None:
                continue  # this project's queue is done for the pass
            yield request
            key = self._usage[project] / self._weight[project]
            heapq.heappush(self._heap, (key, order, project))

    def placed(self, request: Request) -> None:
        """Count ``request``'s CPU against its project (call after placing it)."""
        self._usage[request.project] = self._usage.get(request.project, 0.0) + max(1, request.cpu)


def plan(
    placer: Placer,
    queues: dict[str | None, list[Request]],
    greediness: dict[str | None, float],
    usage: dict[str | None, float],
) -> list[tuple[Request, str]]:
    """Place what fits, in fair-share order; returns ``(request, node id)`` pairs."""
    placements: list[tuple[Request, str]] = []
    fair = FairQueue(queues, greediness, usage)
    for request in fair:
        node = placer.place(request)
        if node is not None:
            fair.placed(request)
            placements.append((request, node.id))
    return placements
