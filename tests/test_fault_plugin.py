"""A fault kind is one file: a throwaway kind from a plugin module (``TELEMETRY_PLUGINS``) runs in a tiny fault cell
with no edit anywhere else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from experiments.plan.matrix import load
from harness.faults import FAULTS, TIMED
from harness.orchestrator import Orchestrator
from harness.services import Services
from pipeline.registry import PLUGINS_ENV

PLUGIN_KIND = '''
"""A throwaway fault kind: ingest stopped (SIGSTOP) for a moment, then continued; a line per step in $TB_FAULT_OUT."""
import os
import signal

from harness.faults.base import FaultKind


class StallIngest(FaultKind):
    name = "stall_ingest"
    hold_s = 0.5

    def _note(self, line):
        with open(os.environ["TB_FAULT_OUT"], "a") as out:
            out.write(line + "\\n")

    async def strike(self, p):
        p.stages["ingest"].signal(signal.SIGSTOP)
        self._note("struck")

    async def undo(self, p):
        p.stages["ingest"].signal(signal.SIGCONT)
        self._note("undone")
        self.fault.detail = "ingest stopped 0.5 s"
'''


async def test_a_plugin_fault_kind_runs_in_a_tiny_fault_cell(
    services: Services, pg_schema: str, queue_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault kind is one file: a plugin module (TELEMETRY_PLUGINS) adds one, a matrix names it, it strikes, is
    undone and its recovery is judged, with no other edit."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tb_throwaway_fault.py").write_text(PLUGIN_KIND)
    monkeypatch.syspath_prepend(str(plugins))
    path = [str(plugins), str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))  # the stages it starts import it too
    monkeypatch.setenv(PLUGINS_ENV, "tb_throwaway_fault")
    out = tmp_path / "fault.txt"
    monkeypatch.setenv("TB_FAULT_OUT", str(out))
    try:
        assert "stall_ingest" in FAULTS and "stall_ingest" in TIMED
        matrix = tmp_path / "tiny.toml"
        matrix.write_text("name = 'tiny'\n[base]\nforwarder = 'none'\n[cells.stall]\nfault = 'stall_ingest'\n")
        cell = next(c for c in load(str(matrix)).cells if c.fault)
        cfg = cell.params.model_copy(update={"duration": 0.0, "count": 6_000, "rate": 3_000, "max_rate": False})
        fault = cell.fault_for(cfg, 0)
        assert fault is not None and fault.kind == "stall_ingest"
        result = await Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key, fault=fault).run()
    finally:
        FAULTS.unregister("stall_ingest")
    a = result.accounting
    assert result.failures == [], "\n".join(result.failures)
    assert a.generated == a.committed == a.rows == 6_000 and a.lost == 0 and a.duplicated == 0
    assert out.read_text().split() == ["struck", "undone"] and fault.detail == "ingest stopped 0.5 s"
    assert fault.recovery_s is not None and 0.5 <= fault.recovery_s < 30, fault
