"""The generator's fast path: readings built with numpy and encoded straight into TelemetryBatch wire bytes.

Values do not depend on time, so they are built ahead, a chunk of whole rounds over the sensors at a time
(``walk``: the same seeded random walk as ``Sensor.fill``, bit for bit), and encoded once, every reading
as a row of fixed columns holding the canonical protobuf encoding of a ``TelemetryBatch.readings`` entry (its
variable-length parts padded, and a mask of the bytes it really holds). The three time fields are holes of fixed
width, which protobuf's encoding allows without changing a field or its number:

- ``timestamp`` (field 1) is always 27 characters (``YYYY-MM-DDTHH:MM:SS.ffffffZ``);
- ``intended_ns`` (8) and ``sent_ns`` (9) are varints of nanoseconds since the epoch, which take exactly nine bytes
  for every value in [2**56, 2**63) ns (from 1972 to 2262); an earlier clock is refused (``check_times``).

A message takes the next readings' bytes (``take``), gets its intended times written in when it is due
(``Pending.stamp_intended``), and its send time when it is handed to gRPC (``Pending.stamp_sent``, which returns
its rows' masked bytes): one numpy assignment per field per message, never a Python loop per reading. The bytes
equal what ``SerializeToString`` gives for the same message (``tests/test_encoder.py`` checks it), except that a
value of exactly 0.0 would be written rather than omitted (it parses the same).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.proto import pb2
from pipeline.sensors import AXES, BANDS, CRITICAL, OFFLINE, OK, STEP, WARNING, Sensor, make_sensors

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

CHUNK_READINGS = 16_384  # readings encoded per chunk (rounded up to whole rounds over the sensors)
TS_LEN = 27
VARINT9_MIN, VARINT9_MAX = 1 << 56, 1 << 63
# per kind: TelemetryResponse.type, the data field's tag, the value fields' tags, and the unit, status and
# sequence-number tags of its *Data message (field numbers from proto/telemetry.proto)
_KIND = {
    "TEMPERATURE": (pb2.TEMPERATURE, 0x2A, (0x1D,), 0x22, 0x28, 0x30),
    "PRESSURE": (pb2.PRESSURE, 0x32, (0x1D,), 0x22, 0x28, 0x38),
    "VELOCITY": (pb2.VELOCITY, 0x3A, (0x1D, 0x25, 0x2D), 0x32, 0x40, 0x48),
}
_PREFIX = 4 + TS_LEN + 4  # readings tag + length, timestamp tag + length, the timestamp, type field, data tag + length
_SUFFIX = 20  # intended_ns and sent_ns: tag + nine bytes each
_POW9 = np.arange(9, dtype=np.int64) * 7
_DIGITS = 10 ** np.arange(5, -1, -1, dtype=np.int64)


def check_times(ns: int) -> None:
    if not VARINT9_MIN <= ns < VARINT9_MAX:
        raise ValueError(f"time {ns} ns is outside [2**56, 2**63): the fast path needs nine-byte varints")


def varint9(ns: I64) -> U8:
    """(n, 9): the varint bytes of every value (each in [2**56, 2**63): exactly nine bytes)."""
    groups = (ns[:, None] >> _POW9) & 0x7F
    groups[:, :8] |= 0x80
    return groups.astype(np.uint8)


def iso_bytes(ns: I64) -> U8:
    """(n, 27): the seed's ISO-8601 timestamp of every time, as the reference path's ``_IsoClock`` writes it."""
    secs = ns // 1_000_000_000
    uniq, inverse = np.unique(secs, return_inverse=True)
    heads = np.frombuffer(
        b"".join(time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(int(s))).encode() for s in uniq), np.uint8
    ).reshape(len(uniq), 20)
    out = np.empty((len(ns), TS_LEN), np.uint8)
    out[:, :20] = heads[inverse.reshape(-1)]
    out[:, 20:26] = ((ns % 1_000_000_000) // 1000)[:, None] // _DIGITS % 10 + 48
    out[:, 26] = ord("Z")
    return out


def _uniform(rngs: list[random.Random], draws: int, step: float) -> npt.NDArray[np.float64]:
    """(len(rngs), draws) of ``rng.uniform(-step, step)``, exactly as ``draws`` calls of it on each rng would give."""
    raw = b"".join(r.getrandbits(64 * draws).to_bytes(8 * draws, "little") for r in rngs)
    words = np.frombuffer(raw, dtype="<u4").reshape(len(rngs), draws, 2)
    hi = (words[..., 0] >> 5).astype(np.float64)
    lo = (words[..., 1] >> 6).astype(np.float64)
    unit = (hi * 67108864.0 + lo) * (1.0 / 9007199254740992.0)  # random.random(): genrand_res53
    return -step + (step - -step) * unit  # random.uniform(a, b) = a + (b - a) * random()


def walk(sensors: list[Sensor], steps: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Advance every sensor (all of one kind) ``steps`` readings, as ``steps`` calls of ``Sensor.fill`` on each
    would: the same random numbers from the same ``random.Random`` (``getrandbits`` yields the Mersenne Twister
    words that ``random()`` consumes two at a time), added in the same order. Returns the values, shape (sensors,
    steps, axes), and the status bitmasks, shape (sensors, steps); each sensor's state and sequence number move on."""
    kind = sensors[0].spec.kind
    assert all(s.spec.kind == kind for s in sensors), "walk() takes sensors of one kind"
    axes = AXES[kind]
    draws = _uniform([s.rng for s in sensors], steps * axes, STEP[kind]).reshape(len(sensors), steps, axes)
    start = np.array([s.state for s in sensors], dtype=np.float64).reshape(len(sensors), 1, axes)
    values = np.cumsum(np.concatenate((start, draws), axis=1), axis=1)[:, 1:]  # sequential: the same sums
    for s, last in zip(sensors, values[:, -1], strict=True):
        s.state[:] = last.tolist()
        s.seq += steps
    if kind == "VELOCITY":
        x, y, z = values[..., 0], values[..., 1], values[..., 2]
        magnitude = np.sqrt(x * x + y * y + z * z)
        status = np.select(
            [magnitude <= 12000, magnitude <= 14000, magnitude <= 15000], [OK, WARNING, CRITICAL], OFFLINE
        )
    else:
        v = values[..., 0]
        (ok, warn, crit) = BANDS[kind]
        conds = [(lo <= v) & (v <= hi) for lo, hi in (ok, warn, crit)]
        status = np.select(conds, [OK, WARNING, CRITICAL], OFFLINE)
    return values, status.astype(np.int64)


def _pad(width: int) -> npt.NDArray[np.bool_]:
    """Row ``k``: the mask of a segment ``width`` wide holding ``k`` bytes."""
    return np.arange(width) < np.arange(width + 1)[:, None]


_PAD5 = _pad(5)
_IDENT_W, _UNIT_W = 24, 12  # widest sensor id field (tag, length, id, subsystem field) and unit field
_FLOAT_AT = _PREFIX + _IDENT_W
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 5)], np.int64)  # varint of v: 1 + (limits <= v) bytes


@dataclass
class Chunk:
    """Readings in fixed columns (one row each) and the mask of the bytes each really holds: a message's wire
    bytes are its rows' masked bytes, row after row. The time fields are columns, stamped per message."""

    rows: U8
    mask: npt.NDArray[np.bool_]


_TS = slice(4, 4 + TS_LEN)
_INTENDED = slice(-19, -10)
_SENT = slice(-9, None)


def _iso(ns: int) -> bytes:
    sec, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode() + b".%06dZ" % (rem // 1000)


def _varint9(ns: int) -> bytes:
    check_times(ns)
    return bytes((
        ns & 0x7F | 0x80, ns >> 7 & 0x7F | 0x80, ns >> 14 & 0x7F | 0x80, ns >> 21 & 0x7F | 0x80, ns >> 28 & 0x7F | 0x80,
        ns >> 35 & 0x7F | 0x80, ns >> 42 & 0x7F | 0x80, ns >> 49 & 0x7F | 0x80, ns >> 56,
    ))  # fmt: skip


@dataclass
class Pending:
    """A message of ``count`` readings, its bytes in one or two chunks, waiting for its stamps."""

    parts: list[tuple[Chunk, int, int]]  # (chunk, first reading, end reading)
    count: int
    last_intended_ns: int = 0

    def head(self, count: int) -> Pending:
        """The message cut to its first ``count`` readings (the stream is ending: the rest are never sent)."""
        parts, left = [], count
        for chunk, a, b in self.parts:
            k = min(left, b - a)
            if k:
                parts.append((chunk, a, a + k))
            left -= k
        return Pending(parts, count)

    def stamp_intended(self, intended_ns: int | I64) -> None:
        """Every reading's intended time (timestamp and intended_ns): one for all (max rate: when the message was
        built) or one each (the schedule's)."""
        if isinstance(intended_ns, int):
            ts, v9 = np.frombuffer(_iso(intended_ns), np.uint8), np.frombuffer(_varint9(intended_ns), np.uint8)
            for chunk, a, b in self.parts:
                chunk.rows[a:b, _TS] = ts
                chunk.rows[a:b, _INTENDED] = v9
            self.last_intended_ns = intended_ns
            return
        check_times(int(intended_ns.min()))
        check_times(int(intended_ns.max()))
        ts_all, v9_all = iso_bytes(intended_ns), varint9(intended_ns)
        done = 0
        for chunk, a, b in self.parts:
            chunk.rows[a:b, _TS] = ts_all[done : done + b - a]
            chunk.rows[a:b, _INTENDED] = v9_all[done : done + b - a]
            done += b - a
        self.last_intended_ns = int(intended_ns[-1])

    def stamp_sent(self, sent_ns: int) -> bytes:
        """The message's wire bytes with every reading's sent_ns set to ``sent_ns``."""
        v9 = np.frombuffer(_varint9(sent_ns), np.uint8)
        out = []
        for chunk, a, b in self.parts:
            chunk.rows[a:b, _SENT] = v9
            out.append(chunk.rows[a:b][chunk.mask[a:b]].tobytes())
        return out[0] if len(out) == 1 else b"".join(out)


class BatchEncoder:
    """The readings of one stream in the order of the rate and max-rate schedules (reading ``k`` is sensor
    ``k % sensors``'s next), from reading ``start_index`` on (the ones before are walked, not encoded)."""

    def __init__(self, sensors: int, seed: int, start_index: int = 0, chunk_readings: int = CHUNK_READINGS,
                 offset: int = 0) -> None:  # fmt: skip
        self.sensors = make_sensors(sensors, seed, offset)
        self.n = sensors
        self.rounds = max(1, -(-chunk_readings // sensors))
        self.groups: dict[str, npt.NDArray[np.intp]] = {}  # kind → its sensors' indices
        for i, sensor in enumerate(self.sensors):
            self.groups[sensor.spec.kind] = np.append(self.groups.get(sensor.spec.kind, np.array([], np.intp)), i)
        templates = [self._template(s) for s in self.sensors]
        width = max(len(t) for t, _ in templates)
        self.template = np.zeros((sensors, width), np.uint8)
        self.template_mask = np.zeros((sensors, width), bool)
        for i, (row, keep) in enumerate(templates):
            self.template[i, : len(row)] = np.frombuffer(row, np.uint8)
            self.template_mask[i, : len(row)] = keep
        self.template_len = self.template_mask.sum(axis=1) - 2  # kept bytes after the readings tag and length
        self.status_at = width - _SUFFIX - 8
        self.next = start_index  # index of the first reading of the next chunk
        self._skip(start_index)
        self.chunk: Chunk | None = None
        self.pos = 0  # readings of self.chunk already taken
        self.chunk_len = 0

    def _template(self, sensor: Sensor) -> tuple[bytes, list[bool]]:
        """A reading of ``sensor`` in fixed columns, and which of them it keeps: readings tag and length, the
        timestamp's hole, type, data tag and length, sensor id and subsystem, the value fields (padded to three),
        unit (padded), status tag and value, sequence number tag and varint (padded), intended_ns and sent_ns."""
        ptype, tag, value_tags, unit_tag, status_tag, seq_tag = _KIND[sensor.spec.kind]
        sid, unit = sensor.sensor_id.encode(), sensor.spec.unit.encode()
        ident = bytes([0x0A, len(sid)]) + sid + bytes([0x10, sensor.spec.subsystem])
        if len(ident) > _IDENT_W or len(unit) + 2 > _UNIT_W:
            raise ValueError(f"sensor id {sensor.sensor_id!r} or unit {sensor.spec.unit!r} too long for the fast path")
        unit_field = bytes([unit_tag, len(unit)]) + unit
        cols = [
            (bytes([0x0A, 0, 0x0A, TS_LEN]) + bytes(TS_LEN) + bytes([0x20, ptype, tag, 0]), [True] * _PREFIX),
            (ident.ljust(_IDENT_W, b"\0"), [True] * len(ident) + [False] * (_IDENT_W - len(ident))),
            (
                b"".join(bytes([t]) + bytes(4) for t in value_tags).ljust(15, b"\0"),
                [k < 5 * len(value_tags) for k in range(15)],
            ),
            (unit_field.ljust(_UNIT_W, b"\0"), [True] * len(unit_field) + [False] * (_UNIT_W - len(unit_field))),
            (bytes([status_tag, 0, seq_tag]) + bytes(5), [False, False, True] + [False] * 5),
            (bytes([0x40]) + bytes(9) + bytes([0x48]) + bytes(9), [True] * _SUFFIX),
        ]
        return b"".join(c for c, _ in cols), [k for _, keep in cols for k in keep]

    def _skip(self, readings: int) -> None:
        """Advance every sensor past the first ``readings`` readings (resume), a bounded chunk at a time."""
        rounds, extra = divmod(readings, self.n)
        for idx in self.groups.values():
            members = [self.sensors[i] for i in idx]
            left = rounds
            while left > 0:
                step = min(left, self.rounds)
                walk(members, step)
                left -= step
            firsts = [self.sensors[i] for i in idx if i < extra]
            if firsts:
                walk(firsts, 1)

    def _build(self) -> Chunk:
        """The next ``rounds`` rounds of readings, from reading ``self.next``, encoded."""
        n, m = self.n, self.rounds
        values = np.zeros((n, m, 3), np.float64)
        status = np.zeros((n, m), np.int64)
        seq0 = np.array([s.seq for s in self.sensors], np.int64)
        for idx in self.groups.values():
            v, st = walk([self.sensors[i] for i in idx], m)
            values[idx, :, : v.shape[2]] = v
            status[idx] = st
        seq = seq0[:, None] + 1 + np.arange(m)
        # reading r * n + c (of this chunk) is sensor (first + c) % n's r-th
        order = (self.next % n + np.arange(n)) % n
        flat_values = values[order].transpose(1, 0, 2).reshape(n * m, 3)
        flat_status = status[order].T.reshape(-1)
        flat_seq = seq[order].T.reshape(-1)
        if int(flat_seq[-1]) >= 1 << 31:
            raise ValueError("sequence_number is an int32: a sensor's readings past 2**31 - 1 cannot be encoded")
        self.next += n * m

        # every reading as a row of fixed columns (the sensor's template, its variable bytes written in), and a
        # mask of the bytes each row really holds
        count = n * m
        rows = np.tile(self.template[order], (m, 1))
        mask = np.tile(self.template_mask[order], (m, 1))
        kept = np.tile(self.template_len[order], m)
        f32 = flat_values.astype("<f4").view(np.uint8).reshape(count, 12)
        for j in range(3):
            rows[:, _FLOAT_AT + 5 * j + 1 : _FLOAT_AT + 5 * j + 5] = f32[:, 4 * j : 4 * j + 4]
        rows[:, self.status_at + 1] = flat_status
        mask[:, self.status_at : self.status_at + 2] = (flat_status != 0)[:, None]
        seq_bytes = 1 + np.searchsorted(_VARINT_LIMITS, flat_seq, side="right")
        groups = (flat_seq[:, None] >> (np.arange(5) * 7)) & 0x7F
        groups[:, :4] |= np.where(np.arange(4) < seq_bytes[:, None] - 1, 0x80, 0)
        rows[:, self.status_at + 3 : self.status_at + 8] = groups
        mask[:, self.status_at + 3 : self.status_at + 8] = _PAD5[seq_bytes]
        reading_len = kept + 2 * (flat_status != 0) + seq_bytes  # without the readings tag and length byte
        rows[:, 1] = reading_len  # at most 33 + 24 + 15 + 12 + 2 + 6 + 20 = 112: a one-byte varint
        rows[:, _PREFIX - 1] = reading_len - (_PREFIX - 2) - _SUFFIX  # the data message's length
        return Chunk(rows, mask)

    def take(self, count: int) -> Pending:
        """The next ``count`` readings as one message (building chunks as needed)."""
        parts = []
        left = count
        while left:
            if self.chunk is None or self.pos == self.chunk_len:
                self.chunk, self.pos = self._build(), 0
                self.chunk_len = len(self.chunk.rows)
            k = min(left, self.chunk_len - self.pos)
            parts.append((self.chunk, self.pos, self.pos + k))
            self.pos += k
            left -= k
        return Pending(parts, count)
