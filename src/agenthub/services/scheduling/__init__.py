"""Workloads and their placement: everything that runs on a node.

``workloads`` creates, cancels and moves workloads through their statuses; ``scheduler`` places
queued ones on ready nodes (``placement`` is the in-memory part); ``protocol`` is the hub's side
of the work protocol with node agents; ``logs`` keeps their output. Hub machines, Cluster
containers and pipelines build on these rather than on runners of their own.
"""
