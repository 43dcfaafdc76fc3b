"""One settings object per stage, from CLI flags, the environment (``TELEMETRY_*``) and ``.env``, in that order.

Every field is a knob of ``pipeline/knobs.py`` (its type, default, bounds and help are declared there, once; a class
here only says which knobs a stage has, as ``name: type = knob("name")``, and the catalogue's type is checked at
import). Stages share groups of fields through mixins, so a name means the same everywhere (``--batch-size`` is the
writer's batch size whether the writer runs alone or inside the ``node`` topology). Variant names are checked
against the registries, and an unknown name fails with the valid ones listed before anything starts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import knobs
from pipeline.knobs import BackendBehaviour, Builder, DelayKind, ForwardFrom, QueueEntry, Rpc, knob
from pipeline.registry import check_variant

T = TypeVar("T", bound="StageSettings")


class ConfigError(SystemExit):
    """A configuration problem, reported in one readable message (no traceback), exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def format_validation_error(exc: ValidationError, source: str = "settings") -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        flag = "--" + where.replace("_", "-")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {flag} = {err.get('input')!r}: {msg}")
    return "\n".join(lines)


class _Settings(BaseSettings):
    """Base of every settings class and mixin, so that they all merge to this one configuration."""

    model_config = SettingsConfigDict(
        env_prefix="TELEMETRY_",
        env_file=".env",
        extra="ignore",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        validate_default=True,
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        knobs.check_fields(cls)

    @field_validator(*knobs.VARIANT_KINDS, check_fields=False)
    @classmethod
    def _known_variant(cls, v: str, info: ValidationInfo) -> str:
        """decoder, queue, sink, forwarder: a registered variant of that kind, else the valid ones listed."""
        return check_variant(str(info.field_name), v)


class StageSettings(_Settings):
    host: str = knob("host")
    metrics_port: int = knob("metrics_port")
    log_level: str = knob("log_level")
    stats_file: str | None = knob("stats_file")
    histograms: bool = knob("histograms")

    @classmethod
    def from_cli(cls: type[T], argv: Sequence[str] | None = None) -> T:
        """Parse flags (and env/.env); on bad input raise ConfigError with one line per problem."""
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            return cls(_cli_parse_args=args)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls.__name__)) from None


class ServicesMixin(_Settings):
    pg_dsn: str | None = knob("pg_dsn")
    redis_url: str | None = knob("redis_url")
    db_schema: str = knob("db_schema")
    nats_url: str | None = knob("nats_url")
    amqp_url: str | None = knob("amqp_url")


class QueueMixin(_Settings):
    queue: str = knob("queue")
    queue_key: str = knob("queue_key")
    queue_entry: QueueEntry = knob("queue_entry")
    queue_cap: int = knob("queue_cap")
    ack_wait: float = knob("ack_wait")
    max_deliver: int = knob("max_deliver")
    max_ack_pending: int = knob("max_ack_pending")
    prefetch: int = knob("prefetch")


class StreamMixin(_Settings):
    """What the subscriber asks the generator for (the batched RPC's StreamRequest)."""

    generator: str = knob("generator")
    rpc: Rpc = knob("rpc")
    rate: float = knob("rate")
    max_rate: bool = knob("max_rate")
    sensors: int = knob("sensors")
    count: int = knob("count")
    duration: float = knob("duration")
    seed: int = knob("seed")
    readings_per_message: int = knob("readings_per_message")
    delay_ingest_us: float = knob("delay_ingest_us")
    delay_kind: DelayKind = knob("delay_kind")
    delay_queue_us: float = knob("delay_queue_us")


class WriterMixin(_Settings):
    sink: str = knob("sink")
    batch_size: int = knob("batch_size")
    flush_interval: float = knob("flush_interval")
    dedupe: bool = knob("dedupe")
    delay_writer_us: float = knob("delay_writer_us")
    delay_kind: DelayKind = knob("delay_kind")


class ForwarderMixin(_Settings):
    forwarder: str = knob("forwarder")
    backend_url: str = knob("backend_url")
    forward_batch: int = knob("forward_batch")
    concurrency: int = knob("concurrency")
    api_token: str | None = knob("api_token")
    pubsub_channel: str | None = knob("pubsub_channel")
    delay_forwarder_us: float = knob("delay_forwarder_us")
    delay_kind: DelayKind = knob("delay_kind")


class DecoderMixin(_Settings):
    decoder: str = knob("decoder")


class GeneratorSettings(StageSettings):
    port: int = knob("port", "generator")
    sensors: int = knob("sensors")
    sensor_offset: int = knob("sensor_offset")
    rate: float = knob("rate")
    count: int = knob("count")
    duration: float = knob("duration")
    seed: int = knob("seed")
    buffer_readings: int = knob("buffer_readings")
    builder: Builder = knob("builder")
    delay_generator_us: float = knob("delay_generator_us")
    delay_kind: DelayKind = knob("delay_kind")


class IngestSettings(StageSettings, ServicesMixin, QueueMixin, StreamMixin, DecoderMixin):
    forward_from: ForwardFrom | None = knob("forward_from")
    progress_key: str | None = knob("progress_key")


class WriterSettings(StageSettings, ServicesMixin, QueueMixin, WriterMixin):
    consumer: str = knob("consumer", "writer")
    forward_from: ForwardFrom | None = knob("forward_from")


class ForwarderSettings(StageSettings, ServicesMixin, QueueMixin, ForwarderMixin):
    consumer: str = knob("consumer", "forwarder")


class NodeSettings(StageSettings, ServicesMixin, QueueMixin, StreamMixin, DecoderMixin, WriterMixin, ForwarderMixin):
    """The seed's topology: ingest, writer(s) and forwarder as coroutines of one process and one event loop."""

    metrics_port: int = knob("metrics_port", "node")
    workers: int = knob("workers")
    seed_prints: bool = knob("seed_prints")
    delay_node_us: float = knob("delay_node_us")


class BackendSettings(StageSettings):
    port: int = knob("port", "backend")
    cors_origins: list[str] = knob("cors_origins")
    api_token: str | None = knob("api_token")
    max_body_bytes: int = knob("max_body_bytes")
    max_ws_clients: int = knob("max_ws_clients")
    ws_buffer: int = knob("ws_buffer")
    backend_behaviour: BackendBehaviour = knob("backend_behaviour")
    fault_hook: bool = knob("fault_hook")
    redis_url: str | None = knob("redis_url")
    pubsub_channel: str | None = knob("pubsub_channel")
    delay_backend_us: float = knob("delay_backend_us")
    delay_kind: DelayKind = knob("delay_kind")

    @model_validator(mode="after")
    def _no_wildcard_cors(self) -> BackendSettings:
        if "*" in self.cors_origins:
            raise ValueError("cors_origins must list origins; '*' is not accepted")
        return self


SETTINGS: dict[knobs.Stage, type[StageSettings]] = {
    "generator": GeneratorSettings,
    "ingest": IngestSettings,
    "writer": WriterSettings,
    "forwarder": ForwarderSettings,
    "node": NodeSettings,
    "backend": BackendSettings,
}
knobs.check_stages(SETTINGS)  # each stage holds exactly the knobs that name it
