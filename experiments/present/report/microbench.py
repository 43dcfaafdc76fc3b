"""The micro-benchmark table: the latest pytest-benchmark save and its change from the one before."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def microbench(root: Path) -> dict[str, Any] | None:
    """The latest pytest-benchmark result of every benchmark under ``root/.benchmarks`` (the machine directory of
    the newest save; a partial run such as ``-k decode`` updates only its own rows) and its change from the save
    before."""
    newest = max((root / ".benchmarks").glob("*/*.json"), key=lambda p: (p.stat().st_mtime, p.name), default=None)
    if newest is None:
        return None
    latest: dict[str, tuple[dict[str, Any], str]] = {}
    before: dict[str, float] = {}
    meta: dict[str, Any] = {}
    for save in sorted(newest.parent.glob("*.json")):  # NNNN_... : oldest first
        try:
            data = json.loads(save.read_text())
        except (OSError, ValueError):
            continue
        meta = data
        for b in data.get("benchmarks", []):
            key = b.get("fullname") or b.get("name", "?")
            if key in latest and latest[key][0].get("stats", {}).get("median"):
                before[key] = latest[key][0]["stats"]["median"]
            latest[key] = (b, save.name.split("_", 1)[0])
    rows = []
    for key, (b, save_no) in latest.items():
        st = b.get("stats", {})
        items = (b.get("extra_info") or {}).get("items")
        prev = before.get(key)
        rows.append({
            "group": b.get("group") or "", "name": b.get("name", "?"), "median": st.get("median"),
            "iqr": st.get("iqr"), "min": st.get("min"), "ops": st.get("ops"), "rounds": st.get("rounds"),
            "per_item": st["median"] / items if items and st.get("median") else None, "n_items": items,
            "change": (st["median"] / prev - 1.0) if prev and st.get("median") else None, "save": save_no,
            "payload": (b.get("extra_info") or {}).get("bytes"),
        })  # fmt: skip
    rows.sort(key=lambda r: (r["group"], r["median"] or 0))
    commit = meta.get("commit_info", {})
    return {
        "dir": os.path.relpath(newest.parent, root),
        "newest": newest.name,
        "datetime": meta.get("datetime"),
        "commit": (commit.get("id") or "")[:8] + (" (dirty)" if commit.get("dirty") else ""),
        "rows": rows,
    }
