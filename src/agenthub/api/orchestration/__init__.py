"""Orchestration surface (TheMachine): tasks, models, agents, workflows, ``/ws``."""
