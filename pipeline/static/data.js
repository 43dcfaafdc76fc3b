// data.js: what the page knows. Websocket messages (batch=1: one JSON array per POST the backend received) are
// parsed and folded into per-sensor rings of 100 ms buckets (chart.js's Series): constant memory per sensor, at
// most CFG.maxSensors tracked, silent ones forgotten after CFG.sensorTtlMs.

import { Series, WINDOW_MS } from './chart.js';
import { CFG, KINDS } from './config.js';
import { recordLatency } from './latency.js';

export const stats = {
  received: 0, messages: 0, late: 0, untracked: 0, ignored: 0, badMessages: 0,
  frames: 0, drawMs: 0, rateSamples: [], rate: 0,
};
export const sensors = new Map(); // sensor_id → Sensor
// `sensors`: the set of sensors changed (the view must be rebuilt); `reading`: the last reading received
export const changed = { sensors: true };
export const latest = { reading: null };

class Sensor {
  constructor(id, type, subsystem) {
    this.id = id;
    this.type = type;
    this.kind = KINDS[type];
    this.subsystem = String(subsystem ?? '');
    this.unit = '';
    this.series = new Series();
    this.seenAt = 0;
    this.count = 0;
    this.countAtTick = 0;
    this.rate = 0;
    this.hay = `${id} ${this.subsystem} ${type} ${this.kind.label}`.toLowerCase();
  }
}

export function onMessage(data) {
  let parsed;
  try {
    parsed = JSON.parse(data);
  } catch {
    stats.badMessages++;
    return;
  }
  const now = Date.now();
  stats.messages++;
  if (Array.isArray(parsed)) {
    for (let i = 0; i < parsed.length; i++) ingest(parsed[i], now);
    if (parsed.length) latest.reading = parsed[parsed.length - 1];
  } else {
    ingest(parsed, now);
    latest.reading = parsed;
  }
}

function ingest(r, now) {
  stats.received++;
  if (r === null || typeof r !== 'object' || !(r.telemetry_type in KINDS)) {
    stats.ignored++;
    return;
  }
  const t = Date.parse(r.reading_timestamp);
  if (Number.isFinite(t)) recordLatency(now - t, now);
  let s = sensors.get(r.sensor_id);
  if (s === undefined || s.type !== r.telemetry_type) {
    if (s === undefined && sensors.size >= CFG.maxSensors) {
      stats.untracked++;
      return;
    }
    s = new Sensor(r.sensor_id, r.telemetry_type, r.subsystem);
    sensors.set(r.sensor_id, s);
    changed.sensors = true;
  }
  s.seenAt = now;
  s.count++;
  const v = s.kind.value(r);
  if (!Number.isFinite(v)) {
    stats.ignored++;
    return;
  }
  s.unit = s.kind.unit(r) ?? '';
  const at = Number.isFinite(t) ? Math.min(t, now) : now; // a clock ahead of ours is drawn at "now"
  if (at < now - WINDOW_MS || !s.series.add(at, v, r.status_bitmask >>> 0)) stats.late++;
}

// once a second: readings/s per sensor, and forget the silent ones
export function everySecond(now) {
  for (const s of sensors.values()) {
    s.rate = s.count - s.countAtTick;
    s.countAtTick = s.count;
  }
  for (const [id, s] of sensors) {
    if (now - s.seenAt > CFG.sensorTtlMs) {
      sensors.delete(id);
      changed.sensors = true;
    }
  }
}

// readings/s over the last second (sampled every 250 ms, at performance.now() = p)
export function sampleRate(p) {
  stats.rateSamples.push([p, stats.received]);
  while (stats.rateSamples.length > 5) stats.rateSamples.shift();
  const [t0, n0] = stats.rateSamples[0];
  stats.rate = p > t0 ? ((stats.received - n0) * 1000) / (p - t0) : 0;
}
