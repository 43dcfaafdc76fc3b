"""``chaos``: several kinds (``harness.faults.CHAOS`` by default: those with ``in_chaos``), each at its own random
moment, overlaps allowed; injected at its first, recovered once every injected part's path moved again (the
parts are the matrix's, ``Fault.parts``; ``harness.faults.injection`` runs each)."""

from harness.faults.base import FaultKind, Pipeline


class Chaos(FaultKind):
    name = "chaos"
    composite = True

    async def strike(self, p: Pipeline) -> None:
        """Never called: the parts strike."""
