"""Worker machines: pools, machine tokens, registration, keepalive TTL state, node views.

A machine registered through the Gateway surface is a node on the Cluster surface; both
surfaces call the functions here and differ only in their envelopes.
"""
