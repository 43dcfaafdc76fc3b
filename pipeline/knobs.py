"""The knob catalogue: every setting of every stage and of a run plan, each declared once, here.

A knob has a name (the settings field; its flag is ``--name-with-dashes``, its variable ``TELEMETRY_NAME``), a
type, a default (a stage run on its own), bounds, a help line, and the stages that consume it. A knob a run plan
sets (``plan=Plan(...)``: a matrix key, a ``telemetry-bench live`` flag) says its run default there when that
differs from the stage-alone default, and why.

Everything else is derived: the stages' settings classes (``pipeline.config``) declare their fields as
``name: type = knob("name")``, the run plan (``harness.plan.PipelineConfig``) as ``name: type = plan_knob("name")``,
and the harness turns a plan into each stage's flags from ``stages`` / ``Plan.passed_to`` (``harness.argv``). Both
classes check at import that each field is a catalogue knob of the catalogue's type, and ``pipeline.config`` checks
that each stage's settings hold exactly the knobs that name that stage. To add a knob: add it to ``KNOBS``, then a
``name: type = knob("name")`` line to the settings class (or mixin) of each stage it names; for a run-plan knob,
a ``plan_knob`` line in ``PipelineConfig`` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

Stage = Literal["generator", "ingest", "writer", "forwarder", "node", "backend"]
STAGES: tuple[Stage, ...] = ("generator", "ingest", "writer", "forwarder", "node", "backend")
HARNESS: tuple[Stage, ...] = ()  # a plan knob no stage reads: the harness itself acts on it

Topology = Literal["split", "node"]
Rpc = Literal["seed", "batched"]
QueueEntry = Literal["reading", "batch"]
ForwardFrom = Literal["ingest", "writer"]
Builder = Literal["numpy", "protobuf"]
BackendBehaviour = Literal["fast", "seed"]
DelayKind = Literal["sleep", "spin"]  # what a delay knob adds (pipeline/delay.py)
VARIANT_KINDS = ("decoder", "queue", "sink", "forwarder")  # knobs naming a registered variant (pipeline.registry)

_ALL: tuple[Stage, ...] = STAGES
_PIPELINE: tuple[Stage, ...] = ("generator", "ingest", "writer", "forwarder", "node")
_STREAM: tuple[Stage, ...] = ("ingest", "node")  # what the subscriber asks the generator for
_SERVICES: tuple[Stage, ...] = ("ingest", "writer", "forwarder", "node")
_WRITE: tuple[Stage, ...] = ("writer", "node")
_FORWARD: tuple[Stage, ...] = ("forwarder", "node")


class _Same:
    def __repr__(self) -> str:
        return "SAME"


SAME: Any = _Same()  # a Plan field that is the knob's own


@dataclass(frozen=True)
class Plan:
    """A knob a run plan sets. ``default``/``type``/bounds: only where the run differs from a stage alone (``why``).
    ``passed_to``: the stages the harness passes it to (default: every stage that consumes it)."""

    default: Any = SAME
    why: str = ""
    type: Any = SAME
    ge: float | None = None
    le: float | None = None
    passed_to: tuple[Stage, ...] | None = None


@dataclass(frozen=True)
class Knob:
    name: str
    type: Any
    default: Any
    help: str
    stages: tuple[Stage, ...]  # the stages whose settings hold it (HARNESS: none, the harness acts on it)
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    plan: Plan | None = None  # None: not part of a run plan (the harness wires it: ports, services, names)
    stage_defaults: Mapping[Stage, Any] = field(default_factory=dict)  # a stage whose default differs (see help)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TELEMETRY_" + self.name.upper()

    @property
    def variant(self) -> str | None:
        """The variant kind this knob names (its values are checked against that registry), if any."""
        return self.name if self.name in VARIANT_KINDS else None

    def default_for(self, stage: Stage | None) -> Any:
        return self.stage_defaults.get(stage, self.default) if stage else self.default

    @property
    def run_default(self) -> Any:
        assert self.plan is not None, f"{self.name} is not a run-plan knob"
        return self.default if self.plan.default is SAME else self.plan.default

    @property
    def run_type(self) -> Any:
        assert self.plan is not None, f"{self.name} is not a run-plan knob"
        return self.type if self.plan.type is SAME else self.plan.type

    @property
    def passed_to(self) -> tuple[Stage, ...]:
        """The stages the harness passes a run plan's value to."""
        if self.plan is None:
            return ()
        return self.stages if self.plan.passed_to is None else self.plan.passed_to


def _k(*knobs: Knob) -> dict[str, Knob]:
    return {k.name: k for k in knobs}


KNOBS: dict[str, Knob] = _k(
    # ------------------------------------------------------------------------------------------ every stage
    Knob("host", str, "127.0.0.1", "address every server of this stage binds", _ALL),
    Knob("metrics_port", int, 0, "port of /metrics (0: any free port; node: 8001, the seed's)", _ALL,
         ge=0, le=65535, stage_defaults={"node": 8001}),
    Knob("log_level", str, "INFO", "logging level (DEBUG, INFO, WARNING, ERROR)", _ALL),
    Knob("stats_file", str | None, None, "on exit, write the final /metrics text here", _ALL),
    Knob("histograms", bool, True, "record histograms (off: counters only, to measure their cost)", _ALL,
         plan=Plan(passed_to=_PIPELINE, why="not passed to the backend: it keeps latency_end_to_end")),
    Knob("port", int, 50051, "port this server listens on (generator: gRPC 50051; backend: HTTP 8000)",
         ("generator", "backend"), ge=0, le=65535, stage_defaults={"backend": 8000}),
    # ------------------------------------------------------------------------------------------- services
    Knob("pg_dsn", str | None, None, "PostgreSQL DSN (default: local server, else a throwaway one)", _SERVICES),
    Knob("redis_url", str | None, None, "Redis URL (default: local server, else a throwaway one; backend: the one "
         "its pub/sub channel is on)", (*_SERVICES, "backend")),
    Knob("db_schema", str, "public", "schema holding telemetry_data", _SERVICES),
    Knob("nats_url", str | None, None, "NATS URL, JetStream on (jetstream queue; default: local, else a throwaway)",
         _SERVICES),
    Knob("amqp_url", str | None, None, "RabbitMQ AMQP URL (rabbitmq queue; default: local guest@127.0.0.1:5672)",
         _SERVICES),
    # ---------------------------------------------------------------------------------------------- the run
    Knob("topology", Topology, "split", "split: a process per stage; node: the seed's one process", HARNESS,
         plan=Plan()),
    Knob("ws_clients", int, 1, "websocket clients the orchestrator runs and counts", HARNESS, ge=0, le=64,
         plan=Plan()),
    Knob("drain_stall_s", float, 10.0, "seconds the drain waits with nothing moving before it gives up and "
         "accounts (a writer's batch also gets its flush_interval); it must outlast a redelivery (claim timeout, "
         "ack_wait) for what a killed stage held to come back", HARNESS, gt=0, le=600, plan=Plan()),
    Knob("workers", int, 1, "writers: queue-reader coroutines in node; in split, writer processes", ("node",),
         ge=1, le=64, plan=Plan(le=16, why="split runs a process each, with fixed metrics ports for 16 (live)")),
    # ----------------------------------------------------------------------------------------------- stream
    Knob("generator", str, "127.0.0.1:50051", "generator gRPC address", _STREAM),
    Knob("rpc", Rpc, "batched", "seed: GetTelemetryStream (no parameters); batched: StreamBatches", _STREAM,
         plan=Plan()),
    Knob("rate", float, 0.0, "offered readings/s, open loop (0: the seed's per-sensor periods)",
         ("generator", *_STREAM), ge=0, plan=Plan()),
    Knob("max_rate", bool, False, "as fast as the pipeline takes them (bounded in flight)", _STREAM, plan=Plan()),
    Knob("sensors", int, 5, "sensors in the stream", ("generator", *_STREAM), ge=1, le=100_000, plan=Plan()),
    Knob("sensor_offset", int, 0, "the run's sensor this generator's sensor 0 is (several generators: each "
         "simulates its own share of the run's sensors, ids unique across them)", ("generator",), ge=0,
         le=100_000),
    Knob("generators", int, 1, "generator processes, each with its own ingest (split): the run's sensors and "
         "rate divided among them, each sensor's readings from one of them", HARNESS, ge=1, le=16,
         plan=Plan()),
    Knob("count", int, 0, "readings to generate (0: until duration / Ctrl-C)", ("generator", *_STREAM), ge=0,
         plan=Plan()),
    Knob("duration", float, 0.0, "seconds to generate (0: until count / Ctrl-C; on the wire: duration_s)",
         ("generator", *_STREAM), ge=0, plan=Plan()),
    Knob("seed", int, 1, "random seed of the value models", ("generator", *_STREAM), ge=0, plan=Plan()),
    Knob("readings_per_message", int, 1, "readings per stream message (batched RPC)", _STREAM, ge=1, le=100_000,
         plan=Plan()),
    Knob("buffer_readings", int, 5000, "per-subscriber bounded buffer, in readings (at least one message)",
         ("generator",), ge=1, plan=Plan()),
    Knob("builder", Builder, "numpy", "batched RPC: numpy (built ahead, encoded once, stamped per message) or "
         "protobuf (the reference: one message object per reading)", ("generator",), plan=Plan()),
    # ---------------------------------------------------------------------------------------------- ingest
    Knob("decoder", str, "dict", "decoder variant", _STREAM,
         plan=Plan("direct", why="the seed's MessageToDict stays a stage's default; runs use field reads")),
    Knob("forward_from", ForwardFrom | None, None,
         "split: push readings to the forwarder's queue at this stage (ingest, or writer after commit)",
         ("ingest", "writer"),
         plan=Plan("ingest", type=ForwardFrom, why="a plan always says where; the harness passes it to that one "
                   "stage, and only when forwarding")),
    # ----------------------------------------------------------------------------------------------- queue
    Knob("queue", str, "list", "queue variant", _SERVICES,
         plan=Plan("stream", why="a stage alone is the seed's list; runs default to the reliable stream")),
    Knob("queue_key", str, "queue:telemetry", "Redis key of the writer queue (forward queue: + ':forward')",
         _SERVICES),
    Knob("progress_key", str | None, None, "Redis hash of ingest's saved stream position, written with each put "
         "(default: the queue key + ':progress'; several generators: one per ingest)", ("ingest",)),
    Knob("queue_entry", QueueEntry, "reading", "one reading or one batch (a stream message) per queue entry",
         _SERVICES, plan=Plan("batch", why="the seed puts one reading per entry; runs move whole messages")),
    Knob("queue_cap", int, 1_000_000, "readings the queue may hold before producers wait", _SERVICES, gt=0,
         plan=Plan(0, ge=0, why="0: auto, 5,000 or two batches per writer "
                   "(PipelineConfig.effective_queue_cap, which is what the stages get)")),
    Knob("ack_wait", float, 10.0, "jetstream: seconds a taken, unacknowledged entry waits before redelivery",
         _SERVICES, gt=0, plan=Plan()),
    Knob("max_deliver", int, -1, "jetstream: deliveries of one entry before it is given up (-1: never)", _SERVICES,
         ge=-1, plan=Plan()),
    Knob("max_ack_pending", int, 1000, "jetstream: entries taken and not acknowledged, over all writers", _SERVICES,
         ge=1, plan=Plan()),
    Knob("prefetch", int, 100, "rabbitmq: entries a writer may hold unacknowledged (basic.qos)", _SERVICES, ge=1,
         le=65535, plan=Plan()),
    # ---------------------------------------------------------------------------------------------- writer
    Knob("sink", str, "copy", "sink variant", _WRITE,
         plan=Plan("copy_binary", why="a stage alone is the seed's text COPY; runs default to binary COPY")),
    Knob("batch_size", int, 20, "rows per transaction (flush when reached)", _WRITE, ge=1, le=1_000_000,
         plan=Plan(1000, why="the seed's 20 stays a stage's default; runs batch 1,000")),
    Knob("flush_interval", float, 10.0, "seconds before a partial batch is flushed", _WRITE, gt=0,
         plan=Plan(0.5, why="the seed's 10 s stays a stage's default; runs flush partial batches in 0.5 s")),
    Knob("dedupe", bool, False, "idempotent writes: stage, then INSERT … ON CONFLICT DO NOTHING (unique index)",
         _WRITE, plan=Plan()),
    Knob("consumer", str, "writer-1", "this worker's name (queue consumer group member)", ("writer", "forwarder"),
         stage_defaults={"forwarder": "forwarder-1"}),
    # ------------------------------------------------------------------------------------ forwarder, backend
    Knob("forwarder", str, "none", "forwarder variant", _FORWARD,
         plan=Plan("async", why="a stage alone forwards nothing; runs forward with bounded async POSTs")),
    Knob("backend_url", str, "http://127.0.0.1:8000", "backend base URL", _FORWARD),
    Knob("pubsub_channel", str | None, None, "Redis pub/sub channel of the pubsub forwarder: it publishes each batch "
         "there, the backend subscribes and broadcasts (None: the backend subscribes to nothing)",
         (*_FORWARD, "backend")),
    Knob("forward_batch", int, 1, "readings per POST (1: the seed's /telem_data; the backend takes ≤ 10,000)",
         _FORWARD, ge=1, le=10_000, plan=Plan(100, why="the seed posts one reading; runs post 100 at a time")),
    Knob("concurrency", int, 8, "POSTs in flight (async forwarder)", _FORWARD, ge=1, le=1024, plan=Plan()),
    Knob("api_token", str | None, None, "bearer token the backend requires on POSTs and /ws (and the forwarder "
         "presents), when set; the harness hands TELEMETRY_API_TOKEN on", (*_FORWARD, "backend")),
    Knob("cors_origins", list[str], ["http://localhost:3000"], "allowed origins (the seed's Next.js)",
         ("backend",)),
    Knob("max_body_bytes", int, 8 * 1024 * 1024, "larger request bodies get 413", ("backend",), gt=0),
    Knob("max_ws_clients", int, 64, "websocket clients at most", ("backend",), ge=1),
    Knob("ws_buffer", int, 10_000, "messages queued per websocket client before drops", ("backend",), ge=1),
    Knob("backend_behaviour", BackendBehaviour, "fast", "fast: validated from the raw body, queued fan-out; seed: "
         "the seed's pydantic model, a print and the broadcast awaited client by client per POST, access log on",
         ("backend",), plan=Plan()),
    Knob("fault_hook", bool, False, "testing only (the backend_503 fault): SIGUSR1 makes POSTs of readings answer "
         "503 until SIGUSR2 (pipeline/backend/fault_hook.py); off: no handler, no cost", ("backend",)),
    Knob("seed_prints", bool, False, "node: print the seed's two lines per reading (received, queue length)",
         ("node",), plan=Plan()),
    # --------------------------------------------- deliberate delays (the what-if experiment; pipeline/delay.py)
    Knob("delay_kind", DelayKind, "spin", "what a delay knob adds: spin holds the CPU (this thread's "
         "CPU time, as slower code would), sleep frees it (as a slower remote service would)", _ALL, plan=Plan()),
    Knob("delay_generator_us", float, 0.0, "extra µs per reading in the generator, once per stream message as it is "
         "handed to gRPC (0: off)", ("generator",), ge=0, le=1e6, plan=Plan()),
    Knob("delay_ingest_us", float, 0.0, "extra µs per reading in ingest's decode, once per stream message after "
         "it is decoded (ingest, and the node's stream reader; 0: off)", _STREAM, ge=0, le=1e6, plan=Plan()),
    Knob("delay_queue_us", float, 0.0, "extra µs per reading in the queue put, once per message before the rows "
         "are put (ingest, and the node's stream reader; 0: off)", _STREAM, ge=0, le=1e6, plan=Plan()),
    Knob("delay_writer_us", float, 0.0, "extra µs per reading in the writer's database write, once per "
         "transaction inside it, before the sink writes (writer, and the node's writers; 0: off)", _WRITE, ge=0,
         le=1e6, plan=Plan()),
    Knob("delay_forwarder_us", float, 0.0, "extra µs per reading in the forwarder, once per batch before it is "
         "sent to the backend (forwarder, and the node's forwarding; 0: off)", _FORWARD, ge=0, le=1e6, plan=Plan()),
    Knob("delay_backend_us", float, 0.0, "extra µs per reading in the backend's POST handler, once per request "
         "after it is validated (0: off)", ("backend",), ge=0, le=1e6, plan=Plan()),
    Knob("delay_node_us", float, 0.0, "extra µs per reading in the node's loop, once per stream message in its "
         "stream reader's put, beside ingest's and the queue's own (0: off)", ("node",), ge=0, le=1e6,
         plan=Plan()),
)  # fmt: skip


def _bounds(k: Knob, plan: bool) -> dict[str, Any]:
    b = {"ge": k.ge, "gt": k.gt, "le": k.le}
    if plan and k.plan is not None:
        if k.plan.ge is not None:
            b.update(ge=k.plan.ge, gt=None)
        if k.plan.le is not None:
            b["le"] = k.plan.le
    return {key: v for key, v in b.items() if v is not None}


def knob(name: str, stage: Stage | None = None) -> Any:
    """The pydantic field of knob ``name`` for a stage's settings (``stage``: where its default differs)."""
    k = KNOBS[name]
    return Field(k.default_for(stage), description=k.help, json_schema_extra={"knob": name}, **_bounds(k, False))


def plan_knob(name: str) -> Any:
    """The pydantic field of knob ``name`` in a run plan (``PipelineConfig``): its run default and bounds."""
    k = KNOBS[name]
    return Field(k.run_default, description=k.help, json_schema_extra={"knob": name}, **_bounds(k, True))


def plan_knobs() -> list[Knob]:
    return [k for k in KNOBS.values() if k.plan is not None]


def knobs_for(stage: Stage) -> list[Knob]:
    return [k for k in KNOBS.values() if stage in k.stages]


def check_fields(cls: Any, *, plan: bool = False) -> None:
    """Every field of a settings class (or of the run plan) is a catalogue knob, made by ``knob()`` (or
    ``plan_knob()``), annotated with the catalogue's type. Raises TypeError naming the field otherwise."""
    for name, info in cls.model_fields.items():
        k = KNOBS.get(name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        where = f"{cls.__name__}.{name}"
        if k is None or extra.get("knob") != name:
            raise TypeError(f"{where} is not declared in pipeline/knobs.py: add it to KNOBS, then use knob({name!r})")
        if plan and k.plan is None:
            raise TypeError(f"{where}: knob {name!r} is not a run-plan knob (give it plan=Plan() in KNOBS)")
        want = k.run_type if plan else k.type
        if info.annotation != want:
            raise TypeError(f"{where} is annotated {info.annotation!r}; pipeline/knobs.py declares {want!r}")


def check_stages(settings: Mapping[Stage, Any]) -> None:
    """Each stage's settings class holds exactly the knobs that name that stage."""
    for stage, cls in settings.items():
        have = set(cls.model_fields)
        want = {k.name for k in knobs_for(stage)}
        if have != want:
            extra, missing = sorted(have - want), sorted(want - have)
            raise TypeError(f"{cls.__name__} (stage {stage}) does not match pipeline/knobs.py: fields not naming "
                            f"this stage {extra}, knobs naming it it lacks {missing}")  # fmt: skip


def names(knobs: Iterable[Knob]) -> list[str]:
    return [k.name for k in knobs]
