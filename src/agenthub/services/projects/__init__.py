"""Projects: who may touch them, their daily budgets (own or a greediness share of the hub's),
and the append-only usage ledger every cost is billed to."""
