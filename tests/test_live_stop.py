"""``telemetry-bench live`` stopped the way a user stops it: Ctrl-C typed in its terminal (the terminal sends SIGINT
to its whole foreground process group) or SIGTERM to that whole group. Run in a real pseudo-terminal, the harness
the session leader with the terminal as its controlling terminal, so the signal is the terminal's, not a kill of
one pid. The run must stop as documented (docs/running.md, "Stopping live"): no stage restarted, the generator
stopped first, every stage drained in flow order, every reading accounted for, exit status 0, nothing left
running. A few seconds of streaming each."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time

import psutil
import pytest

from harness.services import Services
from tests.test_lifeline import ROOT, _gone

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STREAM_S = 3.0  # streaming before the stop


def _controlling_terminal() -> None:  # in the child, after setsid: the pty becomes its controlling terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: every process holding the terminal is gone
        return b""


@pytest.mark.parametrize(
    ("args", "stop"),
    [
        ([], "ctrl-c"),  # the seed's design: one node process, the seed's list, a sync forwarder
        (
            ["--topology", "split", "--rpc", "batched", "--queue", "stream", "--dedupe", "--forwarder", "async"],
            "ctrl-c",
        ),
        ([], "sigterm-group"),
    ],
    ids=["seed-ctrl-c", "split-reliable-ctrl-c", "seed-sigterm-group"],
)
def test_live_stops_cleanly_from_its_terminal(args: list[str], stop: str, services: Services) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update(PYTHONPATH=str(ROOT), TELEMETRY_PG_DSN=services.pg_dsn, TELEMETRY_REDIS_URL=services.redis_url)
    master, slave = os.openpty()
    # a rate each design keeps up with (the seed's ~400/s) and a short flush timer (the seed's is 10 s, which a
    # partial batch waits out in the drain): the drain after the stop is short, the stop path the same
    cmd = [sys.executable, "-m", "telemetry_bench.cli", "live", "--rate", "300", "--duration", "60",
           "--flush-interval", "0.5", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True,
                            preexec_fn=_controlling_terminal)  # fmt: skip
    os.close(slave)
    out, seen = b"", set()
    try:
        harness = psutil.Process(proc.pid)
        deadline = time.monotonic() + 90
        while b"metrics     http" not in out and proc.poll() is None and time.monotonic() < deadline:
            out += _read(master, 0.2)  # until live printed its endpoints: every stage is up, the stream flows
        assert b"metrics     http" in out, ANSI.sub("", out.decode(errors="replace"))
        t0 = time.monotonic()
        while time.monotonic() - t0 < STREAM_S:
            out += _read(master, 0.2)
            seen |= {c.pid for c in harness.children(recursive=True)}
        assert os.getpgid(proc.pid) == proc.pid and os.tcgetpgrp(master) == proc.pid  # the terminal's foreground
        if stop == "ctrl-c":
            os.write(master, b"\x03")  # the terminal's ^C: SIGINT to the whole foreground process group
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            out += _read(master, 0.2)
        while chunk := _read(master, 0.2):
            out += chunk
        rc = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = ANSI.sub("", out.decode(errors="replace"))
    tail = "\n".join(text.splitlines()[-12:])
    assert rc == 0, tail
    assert "every reading accounted for" in text, tail
    assert "restarted" not in text and "died" not in text and "FAILED" not in text, tail
    found = re.search(r"accounting: generated ([\d,]+).*? committed ([\d,]+) .*?lost 0\)", text)
    assert found and found[1] == found[2] and int(found[1].replace(",", "")) > 0, tail
    assert _gone(sorted(seen)) == [], "processes of the run survived the stop"
