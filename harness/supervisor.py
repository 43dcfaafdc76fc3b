"""``live`` as a supervisor: a stage that dies mid-run is started again with the same command (as the fault cells'
kills are, ``Stage.restart``), at most ``max_restarts`` times per stage, each restart announced in one line. With
``max_restarts = 0`` (``live --no-restart``), or once a stage has used its restarts, the run stops and its
accounting says where every uncommitted reading is (``harness.accounting.Uncommitted``). The generator is the
load, not part of the pipeline: its death always ends the run. Once the run is stopping (Ctrl-C, SIGTERM, SIGHUP,
the end of the stream: ``stop()``, called before the generator is stopped), no stage is restarted: the user stops
it, and a stage that dies while draining is a failure the accounting explains, not a reason to start it again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("telemetry_bench.orchestrator")

DEFAULT_MAX_RESTARTS = 3
UNSUPERVISED = ("generator",)  # never restarted


@dataclass
class Supervisor:
    max_restarts: int = DEFAULT_MAX_RESTARTS  # per stage; 0: never restart
    on_restart: Callable[[str], None] | None = None  # called with the line announcing each restart (else logged)
    restarts: dict[str, int] = field(default_factory=dict)  # stage → restarts so far
    stopping: bool = False  # the run is being stopped: never restart

    def __post_init__(self) -> None:
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ValueError(f"max_restarts = {self.max_restarts!r}: must be an integer ≥ 0 (0: never restart)")

    def stop(self) -> None:
        """The run is stopping: from now on no stage is restarted."""
        self.stopping = True

    def allows(self, stage: str) -> bool:
        return not self.stopping and stage not in UNSUPERVISED and self.restarts.get(stage, 0) < self.max_restarts

    def why_not(self, stage: str) -> str:
        """Why a dead stage is not restarted (appended to the error that stops the run)."""
        if self.stopping:
            return " (not restarted: the run is stopping)"
        if stage in UNSUPERVISED:
            return " (the generator is the load: never restarted)"
        if self.max_restarts == 0:
            return " (not restarted: --no-restart)"
        return (
            f" (restarted {self.restarts.get(stage, 0)} times already: the limit, --max-restarts {self.max_restarts})"
        )

    def restarted(self, stage: str, status: int | None) -> str:
        n = self.restarts[stage] = self.restarts.get(stage, 0) + 1
        line = f"{stage} died (exit status {status}): restarted ({n} of at most {self.max_restarts})"
        if self.on_restart is not None:
            self.on_restart(line)
        else:
            log.warning("%s", line)
        return line

    @property
    def any(self) -> bool:
        return bool(self.restarts)
