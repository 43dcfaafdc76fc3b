"""What every stage process shares: settings parsing, logging, signals, a clean one-line exit on bad config."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pipeline.config import ConfigError, StageSettings

S = TypeVar("S", bound=StageSettings)

log = logging.getLogger("telemetry_bench")


class StageError(RuntimeError):
    """An expected failure (a service unreachable, ...): printed as one line, exit status 1."""


def setup_logging(level: str, stage: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {stage} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stopped_early: list[int] = []  # stop signals that arrived while the stage was still starting


def _remember_stop(signum: int, frame: object) -> None:
    _stopped_early.append(signum)


def stop_event() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT: the stage stops taking input, drains, and exits 0 — also when the signal
    came while it was still starting (importing, parsing, connecting), before this event existed."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, event.set)
    if _stopped_early:
        event.set()
    return event


def stage_main(
    stage: str,
    settings_cls: type[S],
    amain: Callable[[S], Coroutine[Any, Any, None]],
    argv: Sequence[str] | None = None,
) -> int:
    for sig in _STOP_SIGNALS:  # from the first moment: a stop during start-up is a clean stop, not a kill
        signal.signal(sig, _remember_stop)
    try:
        settings = settings_cls.from_cli(argv)
    except ConfigError as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, stage)
    from pipeline import metrics

    metrics.set_histograms(settings.histograms)
    try:
        asyncio.run(amain(settings))
    except StageError as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a metrics port already in use
        print(f"{stage}: {exc.strerror or exc}: {exc.filename or ''} (check --metrics-port / --port)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if settings.stats_file:  # final counters survive the process (the orchestrator's accounting reads them)
            from prometheus_client import generate_latest

            Path(settings.stats_file).write_bytes(generate_latest())
    return 0
