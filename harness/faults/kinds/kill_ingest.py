"""``kill_ingest``: ingest killed (SIGKILL) and started again; recovered when it queues readings again."""

from typing import Any

from harness.faults.base import Pipeline
from harness.faults.shared import Kill


class KillIngest(Kill):
    name = "kill_ingest"
    stage = "ingest"
    in_chaos = True

    def progress(self, p: Pipeline, snap: dict[str, Any]) -> int:
        return p.total([self.struck or self.target(p)], "queued")  # the killed ingest's own
