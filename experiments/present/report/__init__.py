"""The HTML report: ``reports/<run-id>/index.html`` from ``results.json``, and ``reports/index.html`` listing runs.

    telemetry-bench report [RUN]      # rebuild one run's report (default: the newest run) and the runs index

Self-contained: one HTML file per run, plots embedded as PNG data URIs (matplotlib, Agg canvas), inline CSS, no
script and nothing fetched from the network; links to profiles are relative, so the report opens from disk.
Rebuilding is always possible: the report is derived from ``results.json`` (and, when present, the cProfile/yappi
files under ``profiles/`` and the latest pytest-benchmark save under ``.benchmarks/``).

One job per module: ``build`` (the pages), ``cells`` (per-cell views, flags, the headline), ``winners`` (each
comparison's winner and its sentence), ``plots``, ``profiles``, ``microbench``, ``fmt`` (number formats). The
statistics (median, interval, the noise rule) are ``experiments.analysis.stats``'s, as everywhere else.

Rules, stated in the report too:

- **winner of a comparison**: see ``experiments.analysis.winners``.
- **within noise**: ``experiments.analysis.stats`` — the 95 % interval of the ratio of the two cells' throughputs
  holds 1.
- **hottest function** of a stage: the most own time (cProfile ``tottime``) excluding idle waits (the event loop's
  ``epoll.poll``, ``select``, ``time.sleep``, lock waits).
"""

from __future__ import annotations

from experiments.present.report.build import ROOT, build_index, build_report
from experiments.present.report.cells import headline
from experiments.present.report.microbench import microbench
from experiments.results.storage import load

__all__ = ["ROOT", "build_index", "build_report", "headline", "load", "microbench"]
