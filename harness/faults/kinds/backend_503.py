"""``backend_503``: the backend answers ``503 Service Unavailable`` to every POST of readings for ``UNAVAILABLE_S``:
SIGUSR1 to its fault hook, then SIGUSR2 (``pipeline.backend.fault_hook``: the one fake, a real backend can't be made
to answer 503 from outside; on only with ``--fault-hook``, which the orchestrator passes only to a run with this
fault). What happens to the readings is the forwarder variant's own behaviour (both retry a 5xx for
``RETRY_FOR_S``: nothing lost). Recovered when readings are forwarded again."""

import signal

from harness.faults.base import FaultKind, Pipeline
from harness.process import PipelineError, Stage

UNAVAILABLE_S = 2.0  # how long the backend answers 503
# the backend's fault hook's signals (pipeline.backend.fault_hook.ON / OFF, checked by a test; not imported:
# importing the backend package costs the harness a second of FastAPI imports at the fault's moment)
HOOK_ON, HOOK_OFF = signal.SIGUSR1, signal.SIGUSR2


class Backend503(FaultKind):
    name = "backend_503"
    needs_backend = True
    backend_hook = True
    hold_s = UNAVAILABLE_S
    hooked: Stage | None = None

    async def strike(self, p: Pipeline) -> None:
        stage = p.stages.get("backend")
        if stage is None:
            raise PipelineError(
                f"fault {self.fault.kind}: this run forwards nothing, so it has no backend (set forwarder)"
            )
        stage.signal(HOOK_ON)
        self.hooked = stage

    async def undo(self, p: Pipeline) -> None:
        if self.hooked is None:
            return
        self.hooked.signal(HOOK_OFF)
        self.fault.detail = (
            f"the backend answered 503 to every POST of readings for {UNAVAILABLE_S:g} s (its fault hook)"
        )
