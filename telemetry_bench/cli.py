"""``telemetry-bench``: the command line.

telemetry-bench run [--matrix default|smoke|seed|full|PATH] [--repeats N] [--profile cprofile|yappi|none]
                    [--memory-profile [CELL]]
telemetry-bench live [--duration S] [--rate R] [--topology split|node] [--sink ...] ...
telemetry-bench report [RUN] [--all]          # rebuild reports/RUN/index.html and reports/index.html
telemetry-bench compare RUN_A RUN_B [--fail-above PCT] [--out FILE]
telemetry-bench services
telemetry-bench proto                         # build the protobuf stubs from proto/
telemetry-bench docs                          # regenerate docs/results-schema.md from the results models
telemetry-bench cluster up [--nodes 3] | down # a local multi-node Ray cluster; run/live --cluster ADDRESS
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from harness.cluster import PlacementError
from harness.lifeline import graceful_stop_signals, reap_leftovers
from harness.plan import SEED, PipelineConfig
from harness.supervisor import DEFAULT_MAX_RESTARTS
from pipeline.config import format_validation_error
from telemetry_bench.cluster_cli import cmd_cluster

console = Console(stderr=True, soft_wrap=True)  # no wrapping: error lines stay one line

# Fixed ports for live runs, so that prometheus.yml (shipped at the repository root) can scrape every stage.
LIVE_PORTS = {
    "generator": 50051, "backend": 8000, "node_metrics": 8001, "ingest_metrics": 8001,
    "forwarder_metrics": 8003, "generator_metrics": 8004,
    **{f"writer-{i}_metrics": 8010 + i for i in range(1, 17)},
}  # fmt: skip


def add_config_flags(parser: argparse.ArgumentParser, base: PipelineConfig) -> None:
    """One flag per PipelineConfig field (the single definition of a run's knobs); defaults from ``base``."""
    for name, fld in PipelineConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(base, name)
        choices = None
        if typing.get_origin(fld.annotation) is typing.Literal:
            choices = list(typing.get_args(fld.annotation))
        helptext = f"{fld.description + ' ' if fld.description else ''}(default: {default})"
        if fld.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            parser.add_argument(flag, default=None, choices=choices, help=helptext, metavar=name.upper())


def config_from_args(args: argparse.Namespace, base: PipelineConfig) -> PipelineConfig:
    values = base.model_dump()
    for name in PipelineConfig.model_fields:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return PipelineConfig.model_validate(values)


def _progress_table(snap: dict[str, Any], elapsed: float) -> Table:
    t = Table(title=f"telemetry-bench live · {elapsed:5.1f} s", show_header=True, header_style="bold")
    for key in ("generated", "ingested", "committed", "forwarded", "broadcast"):
        t.add_column(key, justify="right")
    t.add_row(*(f"{snap.get(k, 0):,}" for k in ("generated", "ingested", "committed", "forwarded", "broadcast")))
    return t


def cmd_live(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetry-bench live",
        description="Run every stage as its own process (the seed's design and rate unless flags say otherwise), "
        "show the counts, stop on Ctrl-C or after --duration/--count, and account for every reading.",
    )
    add_config_flags(parser, SEED)
    parser.add_argument("--pg-dsn", default=None, help="PostgreSQL DSN (default: local, else a throwaway one)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: local, else a throwaway one)")
    parser.add_argument("--embedded", action="store_true", help="always use throwaway PostgreSQL and Redis")
    parser.add_argument("--max-restarts", default=str(DEFAULT_MAX_RESTARTS), metavar="N",
                        help="restart a stage that dies, at most N times per stage; then the run stops "
                        f"(default: {DEFAULT_MAX_RESTARTS})")  # fmt: skip
    parser.add_argument("--no-restart", action="store_true",
                        help="a stage that dies stops the run (the accounting says where every uncommitted reading "
                        "is: in the queue, in flight, or lost)")  # fmt: skip
    add_cluster_flags(parser, place=True)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args, SEED)
    except ValidationError as exc:
        console.print(format_validation_error(exc, "live"), style="red", markup=False, highlight=False)
        return 2
    try:
        max_restarts = int(args.max_restarts)
        if max_restarts < 0:
            raise ValueError
    except ValueError:
        console.print(f"live: --max-restarts = {args.max_restarts!r}: must be an integer ≥ 0 (0: never restart, "
                      "as --no-restart)", style="red", markup=False, highlight=False)  # fmt: skip
        return 2
    args.max_restarts = 0 if args.no_restart else max_restarts
    try:
        args.placement = placement_of(args.place)
    except ValueError as exc:
        console.print(f"live: {exc}", style="red", markup=False, highlight=False)
        return 2
    if args.placement and not args.cluster:
        console.print("live: --place needs --cluster ADDRESS", style="red", markup=False)
        return 2
    if args.cluster and not _ray_installed("live"):
        return 2
    return asyncio.run(_live(cfg, args))


async def _live(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from harness.orchestrator import Orchestrator
    from harness.services import ServiceError, find_services
    from harness.supervisor import Supervisor

    stop = asyncio.Event()
    # a stage that dies is restarted (one line each), up to --max-restarts times; 0: the run stops
    supervisor = Supervisor(
        args.max_restarts, on_restart=lambda line: console.print(line, style="yellow", markup=False, highlight=False)
    )

    def stopping() -> None:  # the supervisor first: no stage the user is stopping is started again
        supervisor.stop()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # each stops the run in order
        loop.add_signal_handler(sig, stopping)
    _reap_leftovers()
    try:
        with find_services(args.pg_dsn, args.redis_url, embedded=args.embedded or None) as services:
            console.print(services.describe(), markup=False, highlight=False)
            workdir = Path(tempfile.mkdtemp(prefix="telemetry-live-"))
            t0 = time.monotonic()
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                placement = None
                if args.cluster:  # the stages on the cluster's hosts; Ray restarts a stage that dies there
                    from harness.cluster.placement import Placement

                    placement = Placement(args.cluster, args.placement, max_restarts=args.max_restarts).connect()
                orch = Orchestrator(
                    cfg, services, workdir, preferred_ports=LIVE_PORTS, supervisor=supervisor, placement=placement,
                    on_progress=lambda snap: live.update(_progress_table(snap, time.monotonic() - t0)),
                )  # fmt: skip
                task = asyncio.create_task(orch.run(stop))
                while not orch.ports.get("generator_metrics") and not task.done():
                    await asyncio.sleep(0.05)
                _print_endpoints(orch.ports, cfg, token=bool(orch.api_token), host=orch.host)
                result = await task
                if placement is not None:
                    placement.close()
            if not console.is_terminal:  # a terminal gets the newline from Live itself; a pipe or a log does not
                console.line()
    except ServiceError as exc:
        console.print(f"live: {exc}", style="red", markup=False)
        return 1
    except PlacementError as exc:
        console.print(f"live: {exc}", style="red", markup=False, highlight=False)
        return 2
    a = result.accounting
    unsent = f" (unsent {a.unsent:,}: due, never sent — the generator fell behind or was stopped)" if a.unsent else ""
    # stopped with a stage dead: what is not committed is not necessarily lost (the failure line says where it is)
    missing = (
        f"lost {a.lost:,}"
        if a.uncommitted is None
        else f"not committed {a.lost:,}, of which lost {a.uncommitted.lost:,}"
    )
    console.print(
        f"accounting: generated {a.generated:,}{unsent} · committed {a.committed:,} (rows {a.rows:,}, duplicated "
        f"{a.duplicated:,}, {missing}) · forwarded {a.forwarded:,} · broadcast {a.broadcast:,} to "
        f"{a.ws_clients} client(s) · logs in {workdir}",
        markup=False, highlight=False,
    )  # fmt: skip
    if supervisor.restarts:
        restarts = ", ".join(f"{name} {n}×" for name, n in supervisor.restarts.items())
        console.print(f"restarted: {restarts}", markup=False, highlight=False)
    if result.failures:
        for f in result.failures:
            console.print(f"FAILED: {f}", style="bold red", markup=False, highlight=False)
        return 1
    console.print("every reading accounted for", style="green")
    return 0


def _print_endpoints(
    ports: dict[str, int], cfg: PipelineConfig, token: bool = False, host: Callable[[str], str] | None = None
) -> None:
    """Where each stage answers; ``host``: a stage's address (its node's on a cluster, else 127.0.0.1)."""
    at = host or (lambda _name: "127.0.0.1")
    lines = [f"generator   grpc://{at('generator')}:{ports.get('generator')}"]
    if "backend" in ports:
        b, h = ports["backend"], at("backend")
        q = "?token=<TELEMETRY_API_TOKEN>" if token else ""
        lines.append(f"backend     http://{h}:{b}/{q}   (dashboard; websocket ws://{h}:{b}/ws, metrics /metrics)")
    for name, port in sorted(ports.items()):
        if name.endswith("_metrics"):
            stage = name.removesuffix("_metrics")
            lines.append(f"metrics     http://{at(stage)}:{port}/metrics   ({stage})")
    console.print("\n".join(lines), markup=False, highlight=False)


def cmd_services(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="telemetry-bench services", description="Show the services a run uses.")
    parser.add_argument("--pg-dsn", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--embedded", action="store_true")
    args = parser.parse_args(argv)
    from harness.services import ServiceError, find_services, versions

    try:
        with find_services(args.pg_dsn, args.redis_url, embedded=args.embedded or None) as services:
            print(services.describe())
            for name, version in versions(services).items():
                print(f"  {name}: {version}")
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetry-bench run",
        description="Run an experiment matrix end to end and write reports/<run-id>/results.json.",
    )
    parser.add_argument("--matrix", default="default", help="a name in experiments/matrices/ or a path to a .toml")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per cell (default: the matrix's)")
    parser.add_argument("--profile", choices=["cprofile", "yappi", "none"], default="cprofile",
                        help="profiler of the extra, untimed repeat per cell (default: cprofile)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="reports directory (default: reports/)")
    parser.add_argument("--profiles", type=Path, default=None, help="profiles directory (default: profiles/)")
    parser.add_argument("--cells", default=None, help="run only cells whose id contains this text")
    parser.add_argument("--pg-dsn", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--embedded", action="store_true", help="always use throwaway PostgreSQL and Redis")
    parser.add_argument("--memory-profile", nargs="?", const="", default=None, metavar="CELL",
                        help="after the cells, one extra repeat of CELL (default: the overload cell, else the cell "
                             "whose stage memory grew most) with its most-growing stage under memray")  # fmt: skip
    add_cluster_flags(parser, place=False)
    args = parser.parse_args(argv)
    from experiments.plan.matrix import MatrixError, load

    if args.repeats is not None and args.repeats < 1:
        console.print(f"run: --repeats {args.repeats}: must be ≥ 1", style="red", markup=False)
        return 2
    try:
        matrix = load(args.matrix)
    except MatrixError as exc:
        console.print(f"run: {exc}", style="red", markup=False, highlight=False)
        return 2
    if args.cells:
        matrix.cells = [c for c in matrix.cells if args.cells in c.id]
        if not matrix.cells:
            console.print(f"run: no cell id contains {args.cells!r}", style="red", markup=False)
            return 2
    if args.cluster and not _ray_installed("run"):
        return 2
    if matrix.placement and not args.cluster:
        console.print(f"run: matrix {matrix.name!r} places stages on hosts ([placement]): pass --cluster ADDRESS "
                      "(telemetry-bench cluster up starts a local one)", style="red", markup=False)  # fmt: skip
        return 2
    if args.memory_profile and args.memory_profile not in {c.id for c in matrix.cells}:
        console.print(f"run: --memory-profile {args.memory_profile!r}: no such cell; cells: "
                      f"{', '.join(c.id for c in matrix.cells)}", style="red", markup=False)  # fmt: skip
        return 2
    graceful_stop_signals()  # SIGTERM / SIGHUP stop the run in order, as Ctrl-C does
    try:
        return asyncio.run(_run(matrix, args))
    except KeyboardInterrupt:
        console.print("run: stopped by a signal; every stage stopped, results so far written", style="red")
        return 130


def _reap_leftovers() -> None:
    """Processes, queue keys and schemas a killed earlier run left behind are removed, one line each."""
    for line in reap_leftovers():
        console.print(line, style="yellow", markup=False, highlight=False)


async def _run(matrix: Any, args: argparse.Namespace) -> int:
    from experiments.run.runner import ROOT, Runner
    from harness.services import ServiceError, find_services

    _reap_leftovers()
    try:
        with find_services(args.pg_dsn, args.redis_url, embedded=args.embedded or None) as services:
            console.print(services.describe(), markup=False, highlight=False)
            runner = Runner(
                matrix, services, repeats=args.repeats, profile=args.profile, out=args.out or ROOT / "reports",
                profiles=args.profiles or ROOT / "profiles",
                console=console, argv=["telemetry-bench", "run", *sys.argv[2:]], memory_profile=args.memory_profile,
                cluster=args.cluster,
            )  # fmt: skip
            results = await runner.run()
            runner.print_summary()
    except ServiceError as exc:
        console.print(f"run: {exc}", style="red", markup=False)
        return 1
    except PlacementError as exc:
        console.print(f"run: {exc}", style="red", markup=False, highlight=False)
        return 2
    return 1 if results.failed_cells else 0


def _find_run(ref: str, reports: Path) -> Path | None:
    """A run directory from a run id (under ``reports``), a directory, or a results.json path."""
    from experiments.results.storage import find_run

    return find_run(ref, reports)


def cmd_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetry-bench report",
        description="Rebuild a run's HTML report (reports/RUN/index.html) from its results.json, and the list of "
        "runs (reports/index.html).",
    )
    parser.add_argument("run", nargs="?", default=None,
                        help="run id, run directory or results.json (default: the newest run)")  # fmt: skip
    parser.add_argument("--reports", type=Path, default=None, help="reports directory (default: reports/)")
    parser.add_argument("--all", action="store_true", help="rebuild every run's report")
    args = parser.parse_args(argv)
    from experiments.present.report import ROOT, build_index, build_report

    reports = args.reports or ROOT / "reports"
    if args.run is not None:
        run = _find_run(args.run, reports)
        if run is None:
            console.print(f"report: no results.json for {args.run!r} (looked in {reports})", style="red", markup=False)
            return 2
        runs = [run]
    else:
        from experiments.results.storage import run_dirs

        found = run_dirs(reports)
        if not found:
            console.print(f"report: no run under {reports}", style="red", markup=False)
            return 2
        runs = found if args.all else found[-1:]
    code = 0
    for run in runs:
        try:
            print(build_report(run))
        except (OSError, ValueError) as exc:
            console.print(f"report: {run}: {exc}", style="red", markup=False, highlight=False)
            code = 1
    print(build_index(runs[0].parent))
    return code


def cmd_compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetry-bench compare",
        description="Compare two runs cell by cell (B against A): throughput and p99 latency ratios, and whether "
        "each change is beyond the repeats' noise. Writes compare-A-vs-B.md beside B's run directory.",
    )
    parser.add_argument("run_a", help="the reference run: id, directory or results.json")
    parser.add_argument("run_b", help="the run to judge")
    parser.add_argument("--fail-above", type=float, default=None, metavar="PCT",
                        help="exit 1 if a cell regressed beyond noise by more than PCT %%")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default: compare-A-vs-B.md)")
    parser.add_argument("--reports", type=Path, default=None, help="reports directory (default: reports/)")
    args = parser.parse_args(argv)
    from experiments.analysis import compare
    from experiments.results.storage import ROOT, load

    if args.fail_above is not None and args.fail_above < 0:
        console.print(f"compare: --fail-above {args.fail_above:g}: must be ≥ 0", style="red", markup=False)
        return 2
    reports = args.reports or ROOT / "reports"
    dirs = []
    for ref in (args.run_a, args.run_b):
        d = _find_run(ref, reports)
        if d is None:
            console.print(f"compare: no results.json for {ref!r} (looked in {reports})", style="red", markup=False)
            return 2
        dirs.append(d)
    a, b = load(dirs[0]), load(dirs[1])
    result = compare.compare(a, b, args.fail_above)
    text = compare.to_markdown(result)
    out = args.out or compare.default_output(dirs[1], a.run_id, b.run_id)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 1 if result.regressions else 0


def cmd_proto(argv: list[str]) -> int:
    from pipeline import proto

    proto.generate()
    print(f"generated {proto.GENERATED} from {proto.PROTO_FILE}")
    return 0


def cmd_docs(argv: list[str]) -> int:
    """Regenerate the generated documentation: docs/results-schema.md from the results models."""
    from experiments.present import schema_doc

    print(f"written {schema_doc.write()}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "live": cmd_live,
    "report": cmd_report,
    "compare": cmd_compare,
    "services": cmd_services,
    "proto": cmd_proto,
    "docs": cmd_docs,
    "cluster": cmd_cluster,
}


def add_cluster_flags(parser: argparse.ArgumentParser, place: bool) -> None:
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="run the stages on the hosts of this Ray cluster (host:port; telemetry-bench cluster "
                        "up; docs/cluster.md); default: local processes")  # fmt: skip
    if place:
        parser.add_argument("--place", action="append", default=[], metavar="KIND=HOST[,HOST]",
                            help="with --cluster: the hosts of a stage kind, e.g. --place writer=b,c (the i-th "
                            "process of a kind on the i-th host); a kind not placed runs on the head's host",
                            )  # fmt: skip


def _ray_installed(command: str) -> bool:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        console.print(f"{command}: --cluster needs Ray: pip install 'telemetry-bench[cluster]'", style="red",
                      markup=False, highlight=False)  # fmt: skip
        return False
    return True


def placement_of(places: list[str]) -> dict[str, list[str]]:
    """``["writer=b,c", "ingest=a"]`` → ``{"writer": ["b", "c"], "ingest": ["a"]}``, checked."""
    from harness.cluster import PlacementError, check_placement

    out: dict[str, list[str]] = {}
    for p in places:
        kind, sep, hosts = p.partition("=")
        if not sep or not hosts:
            raise PlacementError(f"--place {p!r}: expected KIND=HOST[,HOST], e.g. writer=b,c")
        out[kind] = hosts.split(",")
    return check_placement(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"telemetry-bench: unknown command {argv[0]!r}; valid commands: {', '.join(COMMANDS)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(__doc__)
        return 0
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
