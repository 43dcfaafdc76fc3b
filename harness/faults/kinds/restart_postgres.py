"""``restart_postgres``: the machine's own PostgreSQL cluster restarted (``pg_ctlcluster``); only a local cluster
(``pg_lsclusters``) is, any other run records why it was not injected. Recovered when commits move again."""

import asyncio
import subprocess
import time

from harness.faults.base import FaultKind, Pipeline
from harness.faults.shared import local_cluster
from harness.process import PipelineError
from pipeline.endpoints import redact_dsn


class RestartPostgres(FaultKind):
    name = "restart_postgres"

    async def strike(self, p: Pipeline) -> None:
        f = self.fault
        cluster = local_cluster(p.services.pg_dsn) if p.services.pg_source != "embedded" else None
        if cluster is None:
            source = p.services.pg_source
            f.note = (f"not injected: only a local PostgreSQL cluster (pg_lsclusters) is restarted, and this run's "
                      f"({source}, {redact_dsn(p.services.pg_dsn)}) is not one")  # fmt: skip
            f.injected_at_ns = None
            return
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart"]
        proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PipelineError(f"fault restart_postgres: {' '.join(cmd)} failed: {proc.stderr.strip()}")
        f.restarted_at_ns = time.time_ns()
