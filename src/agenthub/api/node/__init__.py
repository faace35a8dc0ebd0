"""The work protocol between the hub and node agents (``/api/v1/node``, Gateway envelope)."""
