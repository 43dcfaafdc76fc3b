"""A variant owns its behaviour and is one file: a throwaway sink from a plugin module runs through a smoke cell
(picked by ``sink = "*"``) with no other edit; the harness asks a queue for its depth and summary and a forwarder
whether it blocks the event loop, by their interface, never by name."""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from experiments.plan.matrix import load
from harness.faults import queue_state
from harness.orchestrator import Orchestrator
from harness.plan import SEED
from harness.services import Services
from pipeline.forwarders import FORWARDERS, Forwarder
from pipeline.queues import QUEUES
from pipeline.registry import PLUGINS_ENV
from pipeline.sinks import SINKS
from tests.test_verdict import verdict

PLUGIN = '''
"""A throwaway sink: rows through executemany, and a line per batch in $TB_THROWAWAY_OUT (proof it wrote them)."""
import os

from pipeline.sinks.base import Sink


class ThrowawaySink(Sink):
    name = "throwaway"

    async def write(self, conn, rows):
        async with conn.cursor() as cur:
            await cur.executemany(self.insert_one, rows)
        with open(os.environ["TB_THROWAWAY_OUT"], "a") as out:
            out.write(f"{len(rows)}\\n")
'''

MATRIX = """
name = "plugin-smoke"
repeats = 1

[base]
forwarder = "none"
batch_size = 500

[[groups]]
name = "sinks"
title = "every registered sink"
vary = { sink = "*" }
"""


@pytest.fixture
def throwaway_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin module on PYTHONPATH and in TELEMETRY_PLUGINS, for this process and the stages it starts."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tb_throwaway_sink.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(plugins))
    path = [str(plugins), str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    monkeypatch.setenv(PLUGINS_ENV, "tb_throwaway_sink")
    out = tmp_path / "written.txt"
    monkeypatch.setenv("TB_THROWAWAY_OUT", str(out))
    yield out
    SINKS.unregister("throwaway")


async def test_a_plugin_sink_runs_through_a_smoke_cell(
    throwaway_sink: Path, services: Services, pg_schema: str, queue_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "plugin-smoke.toml"
    path.write_text(MATRIX)
    cells = {c.id: c for c in load(str(path)).cells}
    # "*" is every registered sink: the built-in ones and the plugin's
    assert {c.params.sink for c in cells.values()} == set(SINKS) >= {"copy", "copy_binary", "insert", "throwaway"}
    cell = cells["sinks-sink=throwaway"]
    cfg = cell.params.model_copy(update={"count": 3000, "max_rate": True, "readings_per_message": 100})
    result = await Orchestrator(cfg, services, tmp_path / "run", schema=pg_schema, queue_key=queue_key).run()
    assert result.failures == [], "\n".join(result.failures)
    a = result.accounting
    assert a.generated == a.committed == a.rows == 3000
    assert sum(int(n) for n in throwaway_sink.read_text().split()) == 3000  # the writer process used the plugin


def test_a_bad_plugin_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, "tb_no_such_plugin")
    with pytest.raises(ValueError, match="TELEMETRY_PLUGINS: cannot import 'tb_no_such_plugin'"):
        SINKS.check("copy")


def test_wildcard_is_only_for_variant_kinds(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(MATRIX.replace('sink = "*"', 'batch_size = "*"'))
    with pytest.raises(ValueError, match=r"batch_size = '\*' means every registered variant"):
        load(str(path))


@pytest.mark.parametrize("name", list(QUEUES))
async def test_queue_depth_and_summary_come_from_the_variant(name: str, services: Services, queue_key: str) -> None:
    client = aioredis.Redis.from_url(services.redis_url)
    if QUEUES[name].broker is not None:
        services.broker_url(QUEUES[name].broker)  # type: ignore[arg-type]
    q = QUEUES[name](client, queue_key, entry="reading")
    try:
        await q.setup()
        assert await QUEUES[name].depth(client, queue_key) == 0
        rows = [("t", "TEMPERATURE", f"S{i}", "ENGINE", i, 0, 1.0, "c", *([None] * 8), 1, 2, 3) for i in range(5)]
        await q.put(rows)  # type: ignore[arg-type]
        assert await QUEUES[name].depth(client, queue_key) == 5
        taken, token = await q.get(2, 1.0)
        state = await asyncio.to_thread(queue_state, services.redis_url, queue_key, name)
        if name == "stream":  # read, not acknowledged: pending in the writers' group, still in the stream
            assert state == {queue_key: f"stream of 5 (group writers {len(taken)} pending)"}
        elif name == "list_reliable":  # taken into the consumer's processing list
            assert state == {queue_key: f"list of {5 - len(taken)}", f"{queue_key}:processing:writer-1": "list of 1"}
        elif name == "jetstream":  # fetched, not acknowledged: pending with the durable consumer, still in the stream
            pending = f"stream of 5 (consumer writers {len(taken)} pending 0 redelivered)"
            assert state == {f"nats:{queue_key.replace(':', '_')}": pending}
        elif name == "rabbitmq":  # delivered to the consumer (up to prefetch): no longer counted as ready
            [(label, text)] = state.items()
            ready = int(text.split(" of ")[1].split()[0])
            assert label == f"amqp:{queue_key}" and ready <= 5 - len(taken) and text.endswith("ready (1 consumers)")
        else:  # popped: gone
            assert state == {queue_key: f"list of {5 - len(taken)}"}
        await q.ack(token)
    finally:
        await q.close()
        keys = [k async for k in client.scan_iter(match=f"{queue_key}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def test_blocking_is_the_forwarders_own_attribute() -> None:
    assert {n for n, f in FORWARDERS.items() if f.blocks_event_loop} == {"sync"}

    class Blocking(Forwarder):
        name = "blocking_throwaway"
        blocks_event_loop = True

        async def send(self, rows: list) -> None:  # type: ignore[type-arg]
            return None

    FORWARDERS.register(Blocking)
    try:  # the verdict reads the attribute, not the name: a new blocking variant gets the same rule
        cfg = SEED.model_copy(update={"rate": 1000.0, "forwarder": "blocking_throwaway"})
        assert verdict(cfg, {"node": 0.4}, post_s=3.0) == "node"
        cfg = SEED.model_copy(update={"rate": 1000.0, "forwarder": "async"})
        assert verdict(cfg, {"node": 0.4}, post_s=3.0) != "node"
    finally:
        FORWARDERS.unregister("blocking_throwaway")
