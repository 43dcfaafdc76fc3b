"""A run plan (``PipelineConfig``) → each stage's command line. The stages read nothing else from the harness: the
children's environment carries no ``TELEMETRY_*`` setting (but the API token and the plugins).

Which plan knob goes to which stage is the catalogue's (``pipeline.knobs``: ``Knob.passed_to``); the harness adds
the wiring it chose (services, ports, names), which must be knobs of that stage too. Two plan knobs have a rule:
``queue_cap`` is passed resolved (``effective_queue_cap``), and ``forward_from`` only to the stage it names, only
in a split run that forwards.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.plan import PipelineConfig
from pipeline.knobs import KNOBS, Stage, plan_knobs


def flags(values: Mapping[str, object]) -> list[str]:
    """``--name value`` per knob (``--name`` / ``--no-name`` for a bool); ``None`` values are left out."""
    out: list[str] = []
    for name, v in values.items():
        flag = KNOBS[name].flag
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        elif v is not None:
            out += [flag, str(v)]
    return out


def plan_values(c: PipelineConfig, stage: Stage) -> dict[str, object]:
    """The run-plan knobs the harness passes to ``stage``, with their values in this plan."""
    values: dict[str, object] = {}
    for k in plan_knobs():
        if stage not in k.passed_to:
            continue
        if k.name == "forward_from" and not (c.forwarding and c.topology == "split" and c.forward_from == stage):
            continue
        values[k.name] = c.effective_queue_cap if k.name == "queue_cap" else getattr(c, k.name)
    return values


def stage_argv(c: PipelineConfig, stage: Stage, wiring: Mapping[str, object]) -> list[str]:
    """The flags of ``stage`` for plan ``c``, then ``wiring`` (knobs the harness sets: services, ports, names)."""
    for name in wiring:
        if name not in KNOBS or stage not in KNOBS[name].stages:
            raise ValueError(f"{name!r} is not a knob of the {stage} stage (pipeline/knobs.py)")
    return flags({**plan_values(c, stage), **wiring})
