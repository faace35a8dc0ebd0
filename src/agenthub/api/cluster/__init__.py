"""Cluster surface (Hivemind): nodes, containers, apps, deployments, and the rest, under /api."""
