"""The one settings tree. Every field is read from the environment with the prefix ``AGENTHUB_``.

Nothing reads settings at import time: the app factory and the CLI call :func:`get_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "agenthub-development-secret-change-me"  # noqa: S105 - refused in production
MIN_PRODUCTION_SECRET_LENGTH = 32


class MachineTypeSettings(BaseModel):
    """A machine type declared in settings: the command that runs the machine's prompt."""

    command: list[str] = Field(min_length=1)
    description: str = ""
    cpu_millicores: int | None = Field(default=None, ge=1)
    memory_mib: int | None = Field(default=None, ge=16)
    env: dict[str, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Configuration of a hub process (and of the CLI commands that touch its database)."""

    model_config = SettingsConfigDict(env_prefix="AGENTHUB_", extra="ignore")

    env: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses to start with the default or a short secret key.",
    )
    data_dir: Path = Field(
        default=Path(".agenthub"),
        description="Directory for the SQLite database, blobs and other local state.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL. Default: a SQLite file in the data dir. "
        "Production: postgresql+asyncpg://user:pass@host/db.",
    )
    database_pool_size: int = Field(
        default=10, ge=1, description="Connection pool size (PostgreSQL only)."
    )
    redis_url: str | None = Field(
        default=None,
        description="Optional Redis URL (redis://host:6379/0). When set, TTL state, rate limits, "
        "token revocation and event fan-out go through Redis and are shared by hub replicas.",
    )
    redis_max_connections: int = Field(
        default=64,
        ge=1,
        description="Redis connections per hub process; requests beyond wait for one.",
    )
    redis_prefix: str = Field(
        default="agenthub:",
        description="Prefix of every Redis key and channel, so deployments can share a server.",
    )
    secret_key: str = Field(
        default=DEFAULT_SECRET_KEY,
        description="Key that signs access and refresh tokens; 32+ characters in production.",
    )
    access_token_ttl_s: int = Field(
        default=3600, ge=60, description="Lifetime of an access token (JWT), in seconds."
    )
    refresh_token_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="Lifetime of a refresh token, in seconds."
    )
    rate_limit_per_minute: int = Field(
        default=100, ge=1, description="Requests per principal (or per IP) per minute."
    )
    rate_limit_per_hour: int = Field(
        default=1000, ge=1, description="Requests per principal (or per IP) per hour."
    )
    rate_limit_per_day: int = Field(
        default=10000, ge=1, description="Requests per principal (or per IP) per day."
    )
    collab_rate_limit_per_minute: int = Field(
        default=100, ge=1, description="Requests per AI identity per minute (Collab)."
    )
    collab_rate_limit_per_hour: int = Field(
        default=1000, ge=1, description="Requests per AI identity per hour (Collab)."
    )
    collab_rate_limit_per_day: int = Field(
        default=10000, ge=1, description="Requests per AI identity per day (Collab)."
    )
    collab_access_token_ttl_s: int = Field(
        default=3600, ge=60, description="Lifetime of an AI's access token (JWT), in seconds."
    )
    collab_open_registration: bool = Field(
        default=True,
        description="Anyone may register an AI identity; false: only admins may.",
    )
    collab_open_login: bool = Field(
        default=False,
        description="Accept the secret-less login (ai_id, ai_name, ai_nickname); trusted "
        "networks only.",
    )
    ai_identity_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a hub replica trusts an AI identity it looked up (active, access "
        "grant); a change made on another replica applies here within this time.",
    )
    collab_online_window_s: int = Field(
        default=300,
        ge=1,
        description="An AI is `online` when it made a request within this many seconds.",
    )
    rate_limit_enabled: bool = Field(
        default=True, description="Turn request rate limiting off entirely (benchmarks only)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Peer addresses whose X-Forwarded-For header is trusted for the client IP.",
    )
    public_url: str | None = Field(
        default=None,
        description="URL clients and node agents use to reach this hub; "
        "default http://<host>:<port> of the running server.",
    )
    ws_ping_interval_s: float = Field(
        default=25.0, gt=0, description="Interval of server `ping` frames on /ws."
    )
    event_retention_days: int = Field(
        default=30, ge=1, description="Events older than this are deleted by the hub."
    )
    pools: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Worker pools besides `default`, comma-separated (AGENTHUB_POOLS=gpu,cpu). "
        "More can be created with `agenthub pool create`.",
    )
    machine_pending_ttl_s: int = Field(
        default=3600,
        ge=1,
        description="How long a machine minted by `agenthub machine create` waits to register.",
    )
    machine_keepalive_ttl_s: int = Field(
        default=300,
        ge=1,
        description="A registered machine is `lost` when no keepalive came for this long.",
    )
    machine_token_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a hub replica trusts a machine token it has checked; a revoked "
        "token stops working on every replica within this time (at once on the one revoking).",
    )
    machine_rate_limit_per_minute: int = Field(
        default=3000,
        ge=1,
        description="Requests per machine token per minute (keepalives, work polls, reports).",
    )
    machine_rate_limit_per_hour: int = Field(
        default=100000, ge=1, description="Requests per machine token per hour."
    )
    machine_rate_limit_per_day: int = Field(
        default=2000000, ge=1, description="Requests per machine token per day."
    )
    node_health_history: int = Field(
        default=120, ge=1, description="Health samples kept per node (oldest dropped first)."
    )
    node_health_sample_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="At most one health sample per node per this many seconds is kept.",
    )
    node_reaper_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the hub looks for machines whose keepalive TTL has lapsed.",
    )
    scheduler_strategy: Literal["binpack", "spread"] = Field(
        default="binpack",
        description="Placement score: `binpack` (fullest node that fits) or `spread` (emptiest).",
    )
    scheduler_batch: int = Field(
        default=5000, ge=1, description="Queued workloads per project one scheduler pass reads."
    )
    scheduler_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="The scheduler runs on every relevant event, and at least this often.",
    )
    scheduler_lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a hub replica leads the scheduler without renewing; another "
        "replica takes over this long after the leader dies.",
    )
    workload_log_max_lines: int = Field(
        default=5000, ge=10, description="Log lines kept per workload (oldest dropped first)."
    )
    hub_daily_money: float = Field(
        default=100.0,
        ge=0,
        description="Hub-wide daily money budget (USD) shared by projects without their own, "
        "each getting greediness / sum(greediness of active projects) of it.",
    )
    hub_daily_time_hours: float = Field(
        default=240.0, ge=0, description="Hub-wide daily budget of machine running time, hours."
    )
    hub_daily_api_calls: int = Field(
        default=100_000, ge=0, description="Hub-wide daily budget of API calls."
    )
    hub_storage_gb: float = Field(
        default=100.0, ge=0, description="Hub-wide checkpoint storage budget, GB."
    )
    budget_timezone: str = Field(
        default="UTC",
        description="Time zone whose midnight starts a budget day (an IANA name, e.g. "
        "Europe/Berlin).",
    )
    compute_price_core_hour: float = Field(
        default=0.05, ge=0, description="Money billed per CPU core-hour a machine uses."
    )
    compute_price_gb_hour: float = Field(
        default=0.01,
        ge=0,
        description="Money billed per GB-hour of memory a machine holds (its request).",
    )
    machine_types: dict[str, MachineTypeSettings] = Field(
        default_factory=dict,
        description="Machine types besides the built-in `shell`, as JSON: "
        '{"name": {"command": ["prog", "--prompt", "{prompt}"], "description": "..."}}; '
        "`{prompt}`, `{machine_uuid}` and `{project_uuid}` are replaced in each argument.",
    )
    machine_cpu_millicores: int = Field(
        default=1000, ge=1, description="CPU a machine asks for, unless its type says otherwise."
    )
    machine_memory_mib: int = Field(
        default=1024, ge=16, description="Memory a machine asks for, unless its type says."
    )
    machine_pool: str = Field(default="default", description="The pool machines run in.")
    machine_default_max_money: float = Field(
        default=1.0, ge=0, description="A machine's money limit when the spawn gives none."
    )
    machine_default_max_time_minutes: int = Field(
        default=60, ge=1, description="A machine's time limit when the spawn gives none."
    )
    machine_default_max_api_calls: int = Field(
        default=1000, ge=0, description="A machine's API-call limit when the spawn gives none."
    )
    machine_accrual_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often a running machine's compute usage is written to the ledger.",
    )
    machine_controller_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often the machine controller enforces limits and budgets.",
    )
    machine_time_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="The node kills a machine this long after its time limit if the hub "
        "has not stopped it by then (the hub stops it at the limit).",
    )
    blob_dir: Path | None = Field(
        default=None,
        description="Directory of the local checkpoint blob store; default <data_dir>/blobs. "
        "Unused when AGENTHUB_S3_BUCKET is set.",
    )
    s3_bucket: str | None = Field(
        default=None,
        description="When set, checkpoint blobs are stored in this S3 (or S3-compatible) bucket "
        "instead of the local blob directory. Credentials come from the standard AWS "
        "environment variables or config files.",
    )
    s3_prefix: str = Field(
        default="blobs/",
        description="Prefix of every blob key in the S3 bucket (the key is prefix + sha256).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible server (MinIO, Ceph, R2...); default AWS.",
    )
    s3_region: str = Field(default="us-east-1", description="Region of the S3 bucket.")
    s3_create_bucket: bool = Field(
        default=False,
        description="Create the S3 bucket on first use if it does not exist (development).",
    )
    checkpoint_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A checkpoint its node has not delivered after this long is failed.",
    )
    checkpoint_upload_max_mb: int = Field(
        default=1024, ge=1, description="Largest archive `POST /projects/{uuid}/checkpoints` takes."
    )
    local_agent: bool = Field(
        default=True,
        description="`agenthub up` starts a node agent for this machine in pool `default`.",
    )

    @field_validator("pools", mode="before")
    @classmethod
    def _split_pools(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("budget_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _enforce_non_default_secrets(self) -> Settings:
        if self.env == "production" and (
            self.secret_key == DEFAULT_SECRET_KEY
            or len(self.secret_key) < MIN_PRODUCTION_SECRET_LENGTH
        ):
            raise ValueError(
                "AGENTHUB_SECRET_KEY must be set to a random value of at least "
                f"{MIN_PRODUCTION_SECRET_LENGTH} characters when AGENTHUB_ENV=production "
                '(for example: python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'agenthub.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
