"""``kill_writer``: the first writer killed (SIGKILL) and started again; recovered when commits move again."""

from harness.faults.shared import Kill


class KillWriter(Kill):
    name = "kill_writer"
    stage = "writer-1"
    in_chaos = True
