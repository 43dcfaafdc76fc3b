"""``kill_backend``: the backend killed (SIGKILL) and started again; recovered when readings are forwarded again.
Its websocket clients lose what it held: the accounting promises no broadcasts (``broadcast_best_effort``)."""

from harness.faults.shared import Kill


class KillBackend(Kill):
    name = "kill_backend"
    stage = "backend"
    needs_backend = True
    broadcast_best_effort = True
