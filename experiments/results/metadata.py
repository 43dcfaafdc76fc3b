"""Machine and software metadata attached to every results file (as pyperf does): figures need their context."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

from experiments.results.storage import ROOT

PACKAGES = (
    "grpcio",
    "protobuf",
    "psycopg",
    "psycopg-binary",
    "redis",
    "hiredis",
    "fastapi",
    "uvicorn",
    "httpx",
    "requests",
    "websockets",
    "orjson",
    "pydantic",
    "prometheus-client",
    "uvloop",
    "yappi",
)


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "short": "nogit", "dirty": None}
    return {"commit": commit or None, "short": commit[:8] if commit else "nogit", "dirty": dirty}


def run_id(now: datetime | None = None) -> str:
    """UTC timestamp + short commit: sortable, unique enough, says what code ran."""
    now = now or datetime.now(UTC)
    g = git_commit()
    return f"{now:%Y%m%dT%H%M%SZ}-{g['short']}{'-dirty' if g['dirty'] else ''}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    freq = psutil.cpu_freq()
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        "cpu_mhz": round(freq.current) if freq else None,
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "kernel": platform.release(),
        "load_avg": list(os.getloadavg()),
        "boot_time": datetime.fromtimestamp(psutil.boot_time(), UTC).isoformat(),
    }


def software() -> dict[str, Any]:
    pkgs: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "telemetry_bench": version("telemetry-bench"),
        "packages": pkgs,
    }
