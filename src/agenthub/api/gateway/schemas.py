"""Request and response bodies of the Gateway surface, as its document names them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Taint(BaseModel):
    key: str
    value: str = ""
    effect: str = "NoSchedule"


class RegisterRequest(BaseModel):
    token: str = Field(description="The machine token (also sent as the Bearer token).")
    machine_id: str = Field(description="8 hexadecimal characters.", examples=["1165a9b6"])
    hostname: str
    provider_name: str = "generic"
    pool_name: str
    cpu: str = Field(description='Millicores, e.g. "8000m".', examples=["8000m"])
    memory: str = Field(description='e.g. "16Gi" or "32768Mi".', examples=["16Gi"])
    gpu_count: str = Field(description='An integer string, e.g. "1".', examples=["0"])
    private_ip: str
    # Extensions: agenthub's own agent sends these; other agents may leave them out.
    gpu_type: str | None = Field(None, max_length=64)
    agent_version: str | None = Field(None, max_length=64)
    labels: dict[str, str] | None = None
    taints: list[Taint] | None = None
    runtimes: list[str] | None = Field(
        None, max_length=8, description='Runtimes the node agent has: "sandbox", "docker".'
    )


class RegisteredState(BaseModel):
    machine_id: str
    status: str
    pool_name: str
    ttl_seconds: int


class RegisterResponse(BaseModel):
    config: dict[str, Any] | None = None
    machine_state: RegisteredState


class KeepaliveRequest(BaseModel):
    # Optional here so that a missing one gets the document's own message.
    machine_id: str | None = Field(None, max_length=64)
    pool_name: str | None = Field(None, max_length=64)
    provider_name: str | None = None
    agent_version: str | None = Field(None, max_length=64)
    metrics: dict[str, Any] | None = None


class KeepaliveState(BaseModel):
    machine_id: str
    status: str
    last_keepalive: str
    last_worker_seen: str
    ttl_seconds: int
    agent_version: str


class KeepaliveResponse(BaseModel):
    status: str = "ok"
    machine_state: KeepaliveState


class ListedState(BaseModel):
    machine_id: str
    pool_name: str
    status: str
    hostname: str
    provider_name: str
    cpu: int
    memory: int
    gpu_count: int
    agent_version: str


class ListedMachine(BaseModel):
    state: ListedState
    metrics: dict[str, Any]
