"""Hub surface (autovibe): Intelligent Machines, projects, checkpoints, resources, health."""
