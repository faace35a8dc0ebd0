"""All ORM models, imported here so that metadata is complete wherever it is used."""

from agenthub.db.models.checkpoints import Checkpoint, Experiment, HubSnapshot
from agenthub.db.models.collab import (
    AiIdentity,
    CollabMessage,
    Collaboration,
    CollabSession,
    InboxCount,
    MessageDelivery,
)
from agenthub.db.models.events import Event
from agenthub.db.models.identity import ApiKey, RevokedToken, User
from agenthub.db.models.nodes import MachineToken, Node, NodeHealthSample, NodeLease, Pool
from agenthub.db.models.projects import Machine, Project, UsageEntry
from agenthub.db.models.state import HubInfo, RateLimitCounter
from agenthub.db.models.workloads import ControllerLease, Workload, WorkloadLog

__all__ = [
    "AiIdentity",
    "ApiKey",
    "Checkpoint",
    "CollabMessage",
    "CollabSession",
    "Collaboration",
    "ControllerLease",
    "Event",
    "Experiment",
    "HubInfo",
    "HubSnapshot",
    "InboxCount",
    "Machine",
    "MachineToken",
    "MessageDelivery",
    "Node",
    "NodeHealthSample",
    "NodeLease",
    "Pool",
    "Project",
    "RateLimitCounter",
    "RevokedToken",
    "UsageEntry",
    "User",
    "Workload",
    "WorkloadLog",
]
