"""All ORM models, imported here so that metadata is complete wherever it is used."""

from agenthub.db.models.events import Event
from agenthub.db.models.identity import ApiKey, RevokedToken, User
from agenthub.db.models.state import RateLimitCounter

__all__ = ["ApiKey", "Event", "RateLimitCounter", "RevokedToken", "User"]
