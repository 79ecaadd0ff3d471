"""Every setting of the server, in one place: defaults, `INVARIANT_*` environment variables, CLI flags.

`Settings(...)` holds exactly what it is given (and the defaults): the environment is read in one place,
`Settings.from_environment`, which the CLI calls once. The app and every part of it receive the value.

Every number has a finite range: an infinite timeout or delay would overflow the clocks that use it
(a compute thread that dies on its first request), so out-of-range values fail at start-up instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from service.policy import parse_policy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVARIANT_", frozen=True)

    repository: Path = Field(Path("model-repository"), description="Model repository: <dir>/<name>/<version>/")
    model_control: Literal["poll", "explicit", "none"] = Field(
        "poll",
        description="poll: follow the repository on disk; explicit: only the repository API loads and unloads; "
        "none: load at start-up only",
    )
    poll_interval_s: float = Field(
        2.0, gt=0, le=3600, allow_inf_nan=False, description="Seconds between repository scans (poll mode)"
    )
    version_policy: str = Field("latest:2", description="Versions that serve: all, latest:N or specific:V[,V...]")
    host: str = Field("127.0.0.1", description="Address to bind")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 picks a free one)")
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="Port of the gRPC server (Open Inference Protocol / Triton's GRPCInferenceService) on the same "
        "host; 0 turns gRPC off",
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes, each with its own models and batcher")
    chunk_rows: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] | None = Field(
        None,
        description="C: every forward pass runs on exactly this many rows, zero-padded; 'auto' times C in "
        "1, 2, 4, ..., 256 per model at load and takes the most rows/s within --chunk-latency-bound-ms "
        "(unset: the device's default, 32 on cpu, 64 on cuda)",
    )
    strict_chunk_rows: bool = Field(
        False,
        description="Refuse a model whose self-test fails at the chosen C instead of trying the candidate C's "
        "around it (service/guarantee/shape.py)",
    )
    small_chunk_rows: int = Field(
        8, ge=0, le=4096,
        description="Chunks of at most this many rows run at this C instead, where the self-test proves that both "
        "shapes give every row the same bits (else one shape); 0: off",
    )  # fmt: skip
    chunk_latency_bound_ms: float = Field(
        1.0, gt=0, le=10_000, description="With --chunk-rows auto: the longest one C-row forward may take"
    )
    placement: Literal["auto", "loop", "thread"] = Field(
        "auto",
        description="Where a model's chunks run: on the event loop's thread (no hand-off; for fast models), "
        "on a compute thread of their own, or auto: loop when one C-row forward measured at load takes at most "
        "--loop-forward-bound-ms",
    )
    loop_forward_bound_ms: float = Field(
        0.5, gt=0, le=100, allow_inf_nan=False, description="With --placement auto: the longest C-row forward "
        "that runs on the event loop (a longer one would stall every other request)",
    )  # fmt: skip
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per process (part of the guarantee)")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="Where models run (auto: cuda when available)")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="What models compute in; bfloat16 on cuda only (checkpoints stay float32, cast at load)"
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1, le=1 << 30, description="Requests with larger bodies (also once decompressed) get 413"
    )
    max_queue_rows: int = Field(
        8192, ge=1, le=10_000_000, description="Rows waiting per model before 503 + Retry-After"
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, allow_inf_nan=False, description="A request not answered by then gets 504"
    )
    read_timeout_s: float = Field(
        10.0, gt=0, le=30, allow_inf_nan=False,
        description="A request's headers or body not received within this long closes the connection (408 for a body)",
    )  # fmt: skip
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=1 << 20,
        description="A request line and header fields over this many bytes get 431 and the connection closes",
    )  # fmt: skip
    max_header_fields: int = Field(
        100, ge=8, le=10_000, description="A request with more header fields gets 431 and the connection closes"
    )
    max_pipelined_requests: int = Field(
        8, ge=1, le=1024,
        description="Requests a connection may send ahead of its answers; past this the server stops reading it",
    )  # fmt: skip
    load_timeout_s: float = Field(
        600.0, gt=0, le=86_400, allow_inf_nan=False,
        description="A model load (checks, self-test, calibration) not done within this long refuses the version",
    )  # fmt: skip
    max_queue_delay_ms: float = Field(
        0.0, ge=0, le=10_000, allow_inf_nan=False,
        description="Wait up to this long to fill a chunk; 0 runs a lone request at once",
    )  # fmt: skip
    audit_fraction: float = Field(
        0.001, ge=0, le=1, allow_inf_nan=False,
        description="Fraction of served rows re-run alone in the background and compared",
    )  # fmt: skip
    self_test_seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the self-test's random probe and co-rows")
    portable_numerics: bool = Field(
        False,
        description="Pin ATEN_CPU_CAPABILITY, MKL_CBWR and ONEDNN_MAX_CPU_ISA (set before torch is imported) so "
        "that different CPUs give the same bits; slower",
    )
    expect_fingerprint: str = Field(
        "",
        max_length=4096,
        description="Comma-separated numerics fingerprints a model may have; any other makes it not ready, "
        "so a load balancer never mixes replicas whose answers differ (empty: no check)",
    )
    replica_name: str = Field(
        "",
        max_length=253,
        pattern=r"^[A-Za-z0-9._-]*$",  # it goes into a response header
        description="Value of the X-Replica header on predictions (empty: the host name)",
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys for inference and metadata (one per line, # comments); enables auth"
    )
    admin_keys_file: Path | None = Field(
        None, description="File of admin keys: model-repository routes, protected /metrics, and all of the above"
    )
    allow_unauthenticated: bool = Field(False, description="Serve a non-loopback address without API keys")
    protect_metrics: bool = Field(False, description="/metrics needs an admin key (default: public)")
    receipts: Literal["request", "always"] = Field(
        "request",
        description="request: an answer carries a signed receipt per row when its request asks (V1 header "
        "X-Receipts: true or ?receipts=true, V2 parameter receipts: true); always: every answer does",
    )
    receipts_key_file: Path | None = Field(
        None,
        description="File of receipt signing keys, one per line like --api-keys-file: the first signs, every "
        "one verifies (rotation); enables receipts and POST /v2/receipts/verify",
    )
    receipts_log: Path | None = Field(
        None,
        description="Directory of the append-only receipts log: a receipt for every answered row, JSON lines, "
        "fsync'd in batches off the request path (needs --receipts-key-file)",
    )
    receipts_log_max_bytes: int = Field(
        64 * 1024 * 1024, ge=4096, le=1 << 40, description="A receipts log file is rotated before it grows past this"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Server log verbosity (uvicorn and invariant-serve loggers)"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or one JSON object per line (uvicorn's lines too)"
    )
    access_log: bool = Field(
        True,
        description="One log line per request: method, route template, model, version, status, rows, queue and "
        "compute ms, request id (never a key, the raw path or input values)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # no silent read of INVARIANT_* wherever a Settings is built: see from_environment

    @classmethod
    def from_environment(cls, **given: Any) -> Settings:
        """`given` (the CLI's flags) over INVARIANT_* variables over the defaults."""
        return cls(**{**EnvSettingsSource(cls)(), **given})

    @field_validator("version_policy")
    @classmethod
    def _valid_policy(cls, text: str) -> str:
        parse_policy(text)  # ValueError names the accepted forms
        return text
