"""Flame graphs and speedscope files drawn from sampled stacks, per stage and per cell, and the command that opens
each view."""

from __future__ import annotations

import collections
import html
import json
import shlex
import zlib
from pathlib import Path

from experiments.analysis.stacks import Stacks, is_idle, merge, read_collapsed


def to_speedscope(stacks: Stacks, name: str) -> dict[str, object]:
    """The speedscope file format (a "sampled" profile; https://www.speedscope.app/file-format-schema.json)."""
    frames: dict[str, int] = {}
    samples, weights = [], []
    for stack, count in stacks.items():
        samples.append([frames.setdefault(f, len(frames)) for f in stack.split(";")])
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f} for f in frames]},
        "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                      "endValue": sum(weights), "samples": samples, "weights": weights}],
        "name": name, "exporter": "telemetry-bench (py-spy samples)",
    }  # fmt: skip


def flamegraph_svg(stacks: Stacks, title: str, width: int = 1000, row: int = 16, min_px: float = 0.3) -> str:
    """A flame graph (root at the bottom, width ∝ samples): warm colours busy, blue idle; hover shows each frame."""
    totals: collections.Counter[tuple[str, ...]] = collections.Counter()
    idle_of: collections.Counter[tuple[str, ...]] = collections.Counter()
    for stack, count in stacks.items():
        path: tuple[str, ...] = ()
        idle = is_idle(stack)
        for frame in stack.split(";"):
            path = (*path, frame)
            totals[path] += count
            if idle:
                idle_of[path] += count
    total = sum(stacks.values()) or 1
    depth = max((len(p) for p in totals), default=0)
    height = (depth + 2) * row
    rects = []
    x_of: dict[tuple[str, ...], float] = {(): 0.0}
    for path in sorted(totals, key=lambda p: (len(p), p)):
        parent = path[:-1]
        x = x_of.get(parent, 0.0)
        w = totals[path] / total * width
        x_of[parent] = x + w  # next sibling starts after this one
        x_of[path] = x
        if w < min_px:  # too narrow to see (the report's embedded graphs draw ≥ 1 px)
            continue
        y = height - (len(path) + 1) * row
        idle = idle_of[path] * 2 > totals[path]
        colour = "#7fa7d9" if idle else f"hsl({20 + zlib.crc32(path[-1].encode()) % 35}, 85%, 60%)"
        label = html.escape(path[-1])
        tip = f"{label} — {totals[path]:,} samples ({totals[path] / total:.1%}){' idle' if idle else ''}"
        text = label if w > 40 else ""
        rects.append(
            f'<g><title>{tip}</title><rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row - 1}" fill="{colour}"/>'
            f'<text x="{x + 3:.2f}" y="{y + row - 4}" font-size="11">'
            f"{text[: int(w / 7)]}</text></g>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'style="max-width:100%;height:auto" font-family="monospace">'
        f'<text x="4" y="14" font-size="12">{html.escape(title)} · {total:,} samples</text>' + "".join(rects) + "</svg>"
    )


def write_views(collapsed: Path, title: str) -> dict[str, Path]:
    """Beside ``<stage>.collapsed``: ``<stage>.speedscope.json`` and ``<stage>.svg``."""
    stacks = read_collapsed(collapsed)
    base = collapsed.with_suffix("")
    speedscope = base.with_suffix(".speedscope.json")
    speedscope.write_text(json.dumps(to_speedscope(stacks, title)))
    svg = base.with_suffix(".svg")
    svg.write_text(flamegraph_svg(stacks, title))
    return {"collapsed": collapsed, "speedscope": speedscope, "svg": svg}


def write_cell_views(cell_dir: Path) -> dict[str, dict[str, Path]]:
    """Merge every ``cell_dir/repeat-*/<stage>.collapsed`` into ``cell_dir/<stage>.collapsed`` and its views
    (speedscope JSON, SVG): stage → kind → file."""
    by_stage: dict[str, list[Path]] = {}
    for f in sorted(cell_dir.glob("repeat-*/*.collapsed")):
        by_stage.setdefault(f.stem, []).append(f)
    out = {}
    for stage, files in sorted(by_stage.items()):
        stacks = merge(files)
        if not stacks:
            continue
        collapsed = cell_dir / f"{stage}.collapsed"
        collapsed.write_text("".join(f"{k} {v}\n" for k, v in stacks.items()))
        out[stage] = write_views(collapsed, f"{cell_dir.name} · {stage} · {len(files)} sampled repeat(s)")
    return out


def open_commands(files: dict[str, str]) -> dict[str, str]:
    """The command that opens each view (kind → path as shown, e.g. relative to the repository root)."""
    how = {"speedscope": "npx speedscope {}", "svg": "xdg-open {}", "collapsed": "flamegraph.pl {} > flame.svg"}
    return {kind: how[kind].format(shlex.quote(path)) for kind, path in files.items() if kind in how}


def memory_commands(files: dict[str, str]) -> dict[str, str]:
    """The command that opens each memray file of a memory-profiled repeat (kind → as shown)."""
    how = {"bin": "memray summary {}", "flamegraph": "xdg-open {}"}
    return {k: how[k].format(v) for k, v in files.items() if k in how}
