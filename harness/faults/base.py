"""What a fault is: the ``Fault`` a cell records (results.json), the shape every fault kind has (``FaultKind``: what
it needs, how it strikes, how it is undone, how its recovery is judged), the registry that discovers the kinds
(one file each in ``harness/faults/kinds/``, more from ``TELEMETRY_PLUGINS``) and what a kind may ask of the
running pipeline (``Pipeline``)."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from harness.process import PipelineError, Stage
from harness.services import Services
from pipeline.registry import Registry

if TYPE_CHECKING:
    from harness.plan import PipelineConfig


class Pipeline(Protocol):
    """What a fault kind needs of the running pipeline (the orchestrator)."""

    cfg: PipelineConfig
    services: Services
    queue_key: str
    schema: str
    stages: dict[str, Stage]

    async def ready(self, stage: Stage) -> None: ...

    def total(self, stage_names: list[str], counter: str) -> int: ...


class FaultKind:
    """One fault kind, one file in ``harness/faults/kinds/`` (or a plugin module): a subclass that sets ``name``.

    - what it needs: ``needs_backend`` (it strikes the backend: the run must forward to one), ``backend_hook`` (the
      backend starts with its fault hook), ``around_run`` (anything it must own for the whole run: its own Redis,
      its own PostgreSQL role), ``in_chaos`` (among chaos's default kinds: they combine safely);
    - how it strikes: ``strike``;
    - how it is undone: a timed kind sets ``hold_s``: ``undo`` runs that long after ``strike`` (and whenever the run
      ends early); a kind that undoes itself (a kill restarts the stage) leaves it None;
    - how its recovery is judged: ``progress`` (a count of the affected path: recovered once it moves past its value
      at the strike, counted from ``fault.restarted_at_ns``, which ``strike``/the hold sets, or ``took_effect``);
      ``flow`` is the path whose first reading starts the fault's clock.
    """

    name: ClassVar[str]
    needs_backend: ClassVar[bool] = False
    backend_hook: ClassVar[bool] = False
    in_chaos: ClassVar[bool] = False
    hold_s: ClassVar[float | None] = None
    broadcast_best_effort: ClassVar[bool] = False  # the accounting can't promise the broadcasts (a killed backend)
    composite: ClassVar[bool] = False  # chaos: its parts strike, each at its own moment
    # a kind that strikes one process (kill_writer, kill_ingest, drop_grpc): the one it strikes by default, its kind's
    # first; the fault's own ``stage`` picks another of the same kind ("writer-2"), or ``any`` (``target``)
    stage: ClassVar[str | None] = None

    def __init__(self, fault: Fault) -> None:
        self.fault = fault

    def target(self, p: Pipeline) -> str:
        """The process to strike: the fault's ``stage`` (``any``: drawn among the run's processes of this kind with
        the fault's seed and moment, so a seed strikes the same one again), else the kind's first."""
        if self.stage is None:
            raise PipelineError(f"fault {self.fault.kind} strikes no single process")
        kind = self.stage.partition("-")[0]
        same = sorted(n for n in p.stages if n.partition("-")[0] == kind)
        want = self.fault.stage or self.stage
        if want == "any" and same:
            want = random.Random(f"{self.fault.seed}:{self.fault.at_s}:{kind}").choice(same)
        if want not in p.stages:
            raise PipelineError(
                f"fault {self.fault.kind}: this run has no stage {want!r}; its {kind} stages: "
                f"{', '.join(same) or 'none (use topology split)'}, or 'any'"
            )
        return want

    @property
    def flow(self) -> str:
        """The counter whose first reading starts the fault's clock: the backend's (forwarded), or the table's."""
        return "forwarded" if self.needs_backend else "committed"

    @contextlib.asynccontextmanager
    async def around_run(self, p: Pipeline) -> AsyncIterator[None]:
        """What the kind needs for the whole run (nothing by default)."""
        yield

    async def strike(self, p: Pipeline) -> None:
        raise NotImplementedError(f"fault {self.name}: no strike")

    async def undo(self, p: Pipeline) -> None:
        """A timed kind: undo the strike (also when the strike failed half-way: undo only what was done)."""

    def progress(self, p: Pipeline, snap: dict[str, Any]) -> int:
        """The affected path's progress (default: its ``flow``, readings forwarded or committed)."""
        return int(snap[self.flow])

    def took_effect(self, p: Pipeline, snap: dict[str, Any]) -> bool:
        """Whether a strike that acts later (a signal the stage reacts to) has taken effect (polled until it has)."""
        return False


ORDER = ("kill_writer", "kill_ingest", "kill_backend", "drop_grpc", "restart_postgres", "restart_redis",
         "refuse_pg", "lock_table", "pause_writer", "redis_full", "backend_503", "chaos")  # fmt: skip
KINDS: Registry[type[FaultKind]] = Registry("fault", package="harness.faults.kinds", base=FaultKind, order=ORDER)


def draw_at_s(seed: int, key: str, index: int, lo_s: float, hi_s: float) -> float:
    """A repeat's fault time, uniform in ``[lo_s, hi_s]``: the same (seed, key, index) always draws the same time
    (``key`` is the cell's id, ``index`` the repeat's), so a run is reproducible from its recorded seed."""
    if not 0 <= lo_s <= hi_s:
        raise ValueError(f"fault window [{lo_s}, {hi_s}] s: need 0 ≤ lo ≤ hi")
    digest = hashlib.sha256(f"{seed}:{key}:{index}".encode()).digest()  # one well-mixed integer per repeat
    return round(random.Random(int.from_bytes(digest[:8], "big")).uniform(lo_s, hi_s), 3)


class Fault(BaseModel):
    """A fault injected ``at_s`` seconds after the stream is flowing (the first reading is in the table, so every
    stage holds readings when it strikes). ``Fault("kill_writer", 1.5)`` or by keyword.

    In ``results.json``: kind, at_s, recovery_s, note, detail, injected, seed and drawn_from_s (a random moment).
    The instants (ns since the epoch) stay out
    of it; read back, they are relative (injected at 0), which keeps ``recovery_s`` and ``injected``."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    at_s: float = 2.0
    injected_at_ns: int | None = Field(None, exclude=True)
    restarted_at_ns: int | None = Field(None, exclude=True)
    resumed_at_ns: int | None = Field(None, exclude=True)  # first progress of the affected path after the fault
    note: str = ""  # why it was not injected
    detail: str = ""  # what the fault did (restart_redis: the queue keys it kept)
    seed: int | None = None  # at a random moment: the seed at_s was drawn with (``draw_at_s``)
    drawn_from_s: tuple[float, float] | None = None  # … and the interval it was drawn from (s after the start)
    parts: list[Fault] = Field(default_factory=list)  # chaos: its faults, each at its own moment
    # a kind that strikes one process (kill_writer, kill_ingest, drop_grpc): which of its kind — e.g. "writer-2", or
    # "any": one drawn per repeat with the fault's seed and moment; None: the kind's first (writer-1, ingest, generator)
    stage: str | None = None

    def __init__(self, kind: str | None = None, at_s: float | None = None, /, **data: Any) -> None:
        if kind is not None:
            data["kind"] = kind
        if at_s is not None:
            data["at_s"] = at_s
        super().__init__(**data)

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"unknown fault {v!r}; valid faults: {', '.join(KINDS)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _from_results(cls, data: Any) -> Any:
        """``injected`` / ``recovery_s`` as stored in results.json → relative instants."""
        if isinstance(data, dict) and ("injected" in data or "recovery_s" in data):
            data = dict(data)
            injected, recovery = data.pop("injected", False), data.pop("recovery_s", None)
            if injected or recovery is not None:
                data.setdefault("injected_at_ns", 0)
                if recovery is not None:
                    data.setdefault("resumed_at_ns", data["injected_at_ns"] + round(recovery * 1e9))
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def recovery_s(self) -> float | None:
        if self.injected_at_ns is None or self.resumed_at_ns is None:
            return None
        return (self.resumed_at_ns - self.injected_at_ns) / 1e9

    @computed_field  # type: ignore[prop-decorator]
    @property
    def injected(self) -> bool:
        return self.injected_at_ns is not None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def drawn(cls, kind: str, seed: int, key: str, index: int, lo_s: float, hi_s: float) -> Fault:
        """A fault at a random moment of ``[lo_s, hi_s]`` (``draw_at_s``), its seed and interval recorded."""
        at = draw_at_s(seed, key, index, lo_s, hi_s)
        return cls(kind, at, seed=seed, drawn_from_s=(round(lo_s, 3), round(hi_s, 3)))
