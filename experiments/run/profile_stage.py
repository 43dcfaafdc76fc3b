"""Run a stage module under a profiler, and save the profile when the stage exits (it exits cleanly on SIGTERM).

    python -m experiments.run.profile_stage --profiler cprofile --out profiles/RUN/CELL/writer-1 -m pipeline.writer ...

cprofile writes ``<out>.prof`` (open with ``snakeviz``). yappi (wall clock, coroutine-aware) writes
``<out>.yappi.pstat`` (pstats format: snakeviz opens it too), ``<out>.callgrind`` and ``<out>.yappi.txt``.
"""

from __future__ import annotations

import runpy
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    try:
        i = argv.index("-m")
    except ValueError:
        print("usage: profile_stage --profiler cprofile|yappi --out PATH -m MODULE [ARGS...]", file=sys.stderr)
        return 2
    opts, module, args = argv[:i], argv[i + 1], argv[i + 2 :]
    profiler = opts[opts.index("--profiler") + 1]
    out = Path(opts[opts.index("--out") + 1])
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.argv = [module, *args]
    # uvicorn re-raises the SIGTERM it caught once it has shut down: turn it into a clean exit so the profile is
    # saved (asyncio stages install their own handler while they run, and exit normally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    code: int | str | None = 0
    if profiler == "cprofile":
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        finally:
            prof.disable()
            prof.dump_stats(str(out) + ".prof")
    elif profiler == "yappi":
        import yappi

        yappi.set_clock_type("wall")
        yappi.start()
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        finally:
            yappi.stop()
            stats = yappi.get_func_stats()
            stats.save(str(out) + ".yappi.pstat", type="pstat")
            stats.save(str(out) + ".callgrind", type="callgrind")
            with open(str(out) + ".yappi.txt", "w") as f:
                stats.sort("ttot", "desc").print_all(out=f)
                yappi.get_thread_stats().print_all(out=f)
    else:
        print(f"unknown profiler {profiler!r}; valid profilers: cprofile, yappi", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
