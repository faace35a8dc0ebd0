"""Intelligent Machines: typed agents spawned into a project's sandbox under hard limits.

A machine is a workload (``owner_kind="machine"``) the scheduler places on a node; its status is
read from that workload. The machine controller bills its compute to the usage ledger and stops
it when a limit or its project's daily budget is reached.
"""
