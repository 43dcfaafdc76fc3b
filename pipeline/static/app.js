// The telemetry-bench live dashboard. Plain ES module, no dependencies; served by the backend at /.
//
// State model: `wanted` (the user's Start/Stop) is kept apart from `conn`, the real websocket state
// (idle | connecting | open | waiting | closing | failed). While wanted, every close that is not a refusal of
// the token schedules a reconnect with exponential backoff (250 ms doubling to 5 s, jittered); Stop cancels
// whatever is pending and closes the socket.
// Data path: websocket messages (batch=1: one JSON array per POST the backend received) are parsed and folded
// into per-sensor rings of 100 ms buckets (chart.js); charts are drawn per animation frame (at most 30 per s),
// never per message. Latency = time of receipt − reading_timestamp, kept for p50/p99 over the last 10 s and
// sent to POST /latency once a second as {"latencies": [...]}, at most 5,000 values per report.
//
// Query parameters: ?token=<api token> (sent as ?token= on the websocket, as a Bearer header on POST /latency),
// ?ws=<websocket url>, ?client_id=<id>, ?autostart=0 (open stopped), ?max_charts=<n>, ?max_sensors=<n>.

import { drawSeries, Series, severity, STATUS, WINDOW_MS } from './chart.js';

const params = new URLSearchParams(location.search);
function intParam(name, dflt, lo, hi) {
  const v = Number.parseInt(params.get(name) ?? '', 10);
  return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt;
}

const CFG = {
  maxCharts: intParam('max_charts', 24, 1, 200), // charts on screen at once; the filter picks which
  maxSensors: intParam('max_sensors', 1000, 1, 100_000), // sensors tracked (each holds a fixed 60 s ring)
  sensorTtlMs: 120_000, // a sensor silent this long is forgotten
  latencyWindowMs: 10_000,
  latencyCap: 16_384, // latency samples kept for the percentiles (the window is the shorter of the two)
  reportEveryMs: 1000,
  reportMax: 5000, // latencies per POST /latency; beyond, a uniform sample of the interval
  backoffBaseMs: 250,
  backoffMaxMs: 5000,
  stableAfterMs: 3000, // a connection open this long resets the backoff
  connectTimeoutMs: 5000,
  frameMs: 1000 / 30,
};

const KINDS = {
  TEMPERATURE: { label: 'temperature', value: (r) => r.temperature, unit: (r) => r.temp_unit },
  PRESSURE: { label: 'pressure', value: (r) => r.pressure, unit: (r) => r.pressure_unit },
  VELOCITY: {
    label: 'velocity |v|',
    value: (r) => Math.sqrt(r.velocity_x * r.velocity_x + r.velocity_y * r.velocity_y + r.velocity_z * r.velocity_z),
    unit: (r) => r.velocity_unit,
  },
};

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $('conn'), toggle: $('toggle'), wsUrl: $('ws-url'), clientId: $('client-id'), token: $('token'),
  rate: $('rate'), rateSub: $('rate-sub'), received: $('received'), receivedSub: $('received-sub'),
  p50: $('lat-p50'), p99: $('lat-p99'), latSub: $('lat-sub'), sensors: $('sensors'), sensorsSub: $('sensors-sub'),
  render: $('render'), renderSub: $('render-sub'), reports: $('reports'), reportsSub: $('reports-sub'),
  filter: $('filter'), type: $('type'), badOnly: $('bad-only'), note: $('view-note'), grid: $('grid'),
  empty: $('empty'), raw: $('raw'), rawJson: $('raw-json'),
};

// --- state ---------------------------------------------------------------------------------------------------

const state = {
  wanted: false,
  conn: 'idle',
  ws: null,
  attempt: 0, // consecutive failed attempts (drives the backoff)
  retryAt: 0,
  timer: 0,
  openedAt: 0,
  everOpened: false,
  reconnects: 0,
  lastClose: '',
  error: '',
};

const stats = {
  received: 0, messages: 0, late: 0, untracked: 0, ignored: 0, badMessages: 0,
  frames: 0, drawMs: 0, rateSamples: [], rate: 0,
};
const sensors = new Map(); // sensor_id → Sensor
const cards = new Map(); // sensor_id → Card (only the charted ones)
let viewDirty = true;
let lastReading = null;

// latency samples (ms) with their receipt times, for the page's own percentiles
const lat = {
  t: new Float64Array(CFG.latencyCap), v: new Float64Array(CFG.latencyCap), head: 0, size: 0,
  scratch: new Float64Array(CFG.latencyCap), p50: NaN, p99: NaN, n: 0, span: 0,
};
// the next POST /latency: a reservoir of seconds
const rep = { buf: new Float64Array(CFG.reportMax), n: 0, seen: 0, inflight: false, sent: 0, values: 0, failed: 0, error: '' };

// --- connection ----------------------------------------------------------------------------------------------

function wsUrl() {
  const url = new URL(ui.wsUrl.value.trim(), location.href);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  url.searchParams.set('client_id', ui.clientId.value.trim() || 'dashboard');
  url.searchParams.set('batch', '1');
  const token = ui.token.value;
  if (token) url.searchParams.set('token', token);
  return url.href;
}

function latencyUrl() {
  const url = new URL(ui.wsUrl.value.trim(), location.href);
  url.protocol = url.protocol === 'wss:' || url.protocol === 'https:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/ws\/?$/, '') + '/latency';
  url.search = '';
  return url.href;
}

function setWanted(on) {
  state.wanted = on;
  if (on) {
    state.error = '';
    state.attempt = 0;
    if (!state.ws) connect();
  } else {
    clearTimeout(state.timer);
    state.timer = 0;
    if (state.ws) {
      state.conn = 'closing';
      state.ws.close(1000, 'stopped');
    } else {
      state.conn = 'idle';
    }
  }
  for (const el of [ui.wsUrl, ui.clientId, ui.token]) el.disabled = on;
  renderStatus();
}

function connect() {
  clearTimeout(state.timer);
  state.timer = 0;
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (e) {
    state.conn = 'failed';
    state.error = `invalid websocket URL: ${e.message}`;
    renderStatus();
    return;
  }
  state.ws = ws;
  state.conn = 'connecting';
  const guard = setTimeout(() => {
    if (ws.readyState === WebSocket.CONNECTING) ws.close();
  }, CFG.connectTimeoutMs);
  ws.onopen = () => {
    clearTimeout(guard);
    if (state.ws !== ws) return;
    state.conn = 'open';
    state.openedAt = performance.now();
    if (state.everOpened) state.reconnects++;
    state.everOpened = true;
    renderStatus();
  };
  ws.onmessage = (ev) => {
    if (state.ws === ws) onMessage(ev.data);
  };
  ws.onerror = () => {}; // a close event follows, with the code
  ws.onclose = (ev) => {
    clearTimeout(guard);
    if (state.ws !== ws) return;
    state.ws = null;
    state.lastClose = describeClose(ev);
    const stable = state.openedAt && performance.now() - state.openedAt >= CFG.stableAfterMs;
    state.openedAt = 0;
    if (!state.wanted) {
      state.conn = 'idle';
    } else if (ev.code === 1008) {
      state.conn = 'failed';
      state.error = 'refused: missing or wrong API token (open the page with ?token=…, or fill in the token)';
    } else {
      if (stable) state.attempt = 0;
      scheduleRetry();
    }
    renderStatus();
  };
  renderStatus();
}

function scheduleRetry() {
  const d = Math.min(CFG.backoffMaxMs, CFG.backoffBaseMs * 2 ** state.attempt);
  const delay = d / 2 + (Math.random() * d) / 2;
  state.attempt++;
  state.conn = 'waiting';
  state.retryAt = performance.now() + delay;
  state.timer = setTimeout(connect, delay);
}

const CLOSE_NAMES = { 1000: 'closed', 1001: 'server going away', 1006: 'connection lost', 1011: 'server error',
  1012: 'server restarting', 1013: 'server busy' };
function describeClose(ev) {
  const name = CLOSE_NAMES[ev.code] ?? 'closed';
  return `${name} (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
}

function renderStatus() {
  const { conn, wanted } = state;
  let text;
  if (conn === 'idle') text = 'stopped';
  else if (conn === 'connecting') text = state.attempt ? `connecting… (attempt ${state.attempt + 1})` : 'connecting…';
  else if (conn === 'open') text = 'live';
  else if (conn === 'closing') text = 'stopping…';
  else if (conn === 'failed') text = state.error;
  else {
    const s = Math.max(0, (state.retryAt - performance.now()) / 1000);
    text = `reconnecting in ${s.toFixed(1)} s · attempt ${state.attempt} · ${state.lastClose}`;
  }
  if (ui.conn.textContent !== text) {
    ui.conn.textContent = text;
    ui.conn.title = text;
  }
  ui.conn.dataset.state = conn;
  document.body.dataset.conn = conn;
  document.body.dataset.wanted = wanted ? '1' : '0';
  ui.toggle.textContent = wanted ? 'Stop streaming' : 'Start streaming';
  ui.toggle.classList.toggle('stop', wanted);
}

window.addEventListener('online', () => {
  if (state.wanted && state.conn === 'waiting') connect();
});

// --- data ----------------------------------------------------------------------------------------------------

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

function onMessage(data) {
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
    if (parsed.length) lastReading = parsed[parsed.length - 1];
  } else {
    ingest(parsed, now);
    lastReading = parsed;
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
    viewDirty = true;
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

function recordLatency(ms, now) {
  const i = lat.head;
  lat.t[i] = now;
  lat.v[i] = ms;
  lat.head = (i + 1) % CFG.latencyCap;
  if (lat.size < CFG.latencyCap) lat.size++;
  const sec = Math.max(0, ms) / 1000; // the backend takes >= 0 (a clock ahead of ours gives < 0)
  if (rep.n < CFG.reportMax) rep.buf[rep.n++] = sec;
  else {
    const j = Math.floor(Math.random() * (rep.seen + 1));
    if (j < CFG.reportMax) rep.buf[j] = sec;
  }
  rep.seen++;
}

function computeLatency(now) {
  const from = now - CFG.latencyWindowMs;
  let n = 0, oldest = now;
  for (let k = 0; k < lat.size; k++) {
    const t = lat.t[k];
    if (t >= from) {
      lat.scratch[n++] = lat.v[k];
      if (t < oldest) oldest = t;
    }
  }
  lat.n = n;
  lat.span = now - oldest;
  if (!n) {
    lat.p50 = lat.p99 = NaN;
    return;
  }
  const a = lat.scratch.subarray(0, n).sort();
  lat.p50 = a[Math.min(n - 1, Math.floor(n * 0.5))];
  lat.p99 = a[Math.min(n - 1, Math.floor(n * 0.99))];
}

async function report() {
  if (rep.inflight || rep.n === 0 || state.conn !== 'open') return;
  const values = Array.from(rep.buf.subarray(0, rep.n), (x) => Math.round(x * 1e6) / 1e6);
  rep.n = 0;
  rep.seen = 0;
  rep.inflight = true;
  const headers = { 'Content-Type': 'application/json' };
  if (ui.token.value) headers.Authorization = `Bearer ${ui.token.value}`;
  try {
    const res = await fetch(latencyUrl(), {
      method: 'POST', headers, body: JSON.stringify({ latencies: values }), signal: AbortSignal.timeout(5000),
    });
    if (res.ok) {
      rep.sent++;
      rep.values += values.length;
      rep.error = '';
    } else {
      rep.failed++;
      rep.error = `HTTP ${res.status}`;
    }
  } catch (e) {
    rep.failed++;
    rep.error = e.name === 'TimeoutError' ? 'timeout' : 'network error';
  } finally {
    rep.inflight = false;
  }
}

function forgetSilentSensors(now) {
  for (const [id, s] of sensors) {
    if (now - s.seenAt > CFG.sensorTtlMs) {
      sensors.delete(id);
      viewDirty = true;
    }
  }
}

// --- view ----------------------------------------------------------------------------------------------------

const collator = new Intl.Collator(undefined, { numeric: true });
const visibility = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const card = e.target._card;
    if (card) card.visible = e.isIntersecting;
  }
});
const sizes = new ResizeObserver((entries) => {
  for (const e of entries) {
    const card = e.target._card;
    if (card) card.resize(e.contentRect.width, e.contentRect.height);
  }
});

function fmtValue(v) {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  return v.toFixed(a >= 1000 ? 1 : a >= 100 ? 2 : 3);
}

class Card {
  constructor(sensor) {
    this.sensor = sensor;
    this.visible = true;
    this.w = 0;
    this.h = 0;
    this.dpr = 1;
    this.frames = 0;
    this.points = 0;
    const el = document.createElement('article');
    el.className = 'card';
    el.dataset.sensor = sensor.id;
    el.innerHTML = `
      <header>
        <span class="sid"></span>
        <span class="badge"></span>
      </header>
      <div class="meta"><span class="kind"></span><span class="srate"></span></div>
      <div class="reading"><span class="value">–</span> <span class="unit"></span></div>
      <div class="plot"><canvas></canvas></div>`;
    el.querySelector('.sid').textContent = sensor.id;
    el.querySelector('.kind').textContent = `${sensor.subsystem} · ${sensor.kind.label}`;
    this.el = el;
    this.badge = el.querySelector('.badge');
    this.value = el.querySelector('.value');
    this.unit = el.querySelector('.unit');
    this.srate = el.querySelector('.srate');
    this.canvas = el.querySelector('canvas');
    this.ctx = this.canvas.getContext('2d', { alpha: true });
    el._card = this;
    this.canvas._card = this;
    visibility.observe(el);
    sizes.observe(this.canvas);
  }

  resize(w, h) {
    this.w = w;
    this.h = h;
    this.dpr = window.devicePixelRatio || 1;
    const bw = Math.round(w * this.dpr), bh = Math.round(h * this.dpr);
    if (this.canvas.width !== bw) this.canvas.width = bw;
    if (this.canvas.height !== bh) this.canvas.height = bh;
  }

  draw(now) {
    if (!this.w || !this.h) return;
    this.points = drawSeries(this.ctx, this.w, this.h, this.dpr, this.sensor.series, now);
    this.frames++;
  }

  updateText(now) {
    const s = this.sensor, series = s.series;
    const sev = severity(series.lastMask);
    const stale = now - s.seenAt > 5000;
    const name = stale ? 'STALE' : STATUS[sev].name;
    if (this.badge.textContent !== name) this.badge.textContent = name;
    this.el.dataset.status = stale ? 'stale' : String(sev);
    const v = fmtValue(series.lastValue);
    if (this.value.textContent !== v) this.value.textContent = v;
    if (this.unit.textContent !== s.unit) this.unit.textContent = s.unit;
    const r = stale ? `${((now - s.seenAt) / 1000).toFixed(0)} s ago` : `${s.rate.toFixed(0)}/s`;
    if (this.srate.textContent !== r) this.srate.textContent = r;
    this.canvas.dataset.frames = String(this.frames);
    this.canvas.dataset.points = String(this.points);
    this.canvas.dataset.last = v;
  }

  destroy() {
    visibility.unobserve(this.el);
    sizes.unobserve(this.canvas);
    this.el.remove();
  }
}

function updateView() {
  viewDirty = false;
  const terms = ui.filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const type = ui.type.value;
  const badOnly = ui.badOnly.checked;
  const now = Date.now();
  const match = [];
  for (const s of sensors.values()) {
    if (type && s.type !== type) continue;
    if (badOnly && !(s.series.lastMask & 7) && now - s.seenAt <= 5000) continue;
    if (terms.length && !terms.every((t) => s.hay.includes(t))) continue;
    match.push(s);
  }
  match.sort((a, b) => collator.compare(a.id, b.id));
  const shown = match.slice(0, CFG.maxCharts);
  const keep = new Set(shown);
  for (const [id, card] of cards) {
    if (!keep.has(card.sensor)) {
      card.destroy();
      cards.delete(id);
    }
  }
  shown.forEach((s, i) => {
    let card = cards.get(s.id);
    if (!card) {
      card = new Card(s);
      cards.set(s.id, card);
      card.updateText(now);
    }
    if (ui.grid.children[i] !== card.el) ui.grid.insertBefore(card.el, ui.grid.children[i] ?? null);
  });
  let note = `${shown.length} charted`;
  if (match.length > shown.length) note += ` of ${match.length} matching — narrow the filter to see others`;
  else if (match.length < sensors.size) note += ` (${sensors.size - match.length} filtered out)`;
  ui.note.textContent = note;
  ui.note.classList.toggle('capped', match.length > shown.length);
  ui.empty.hidden = sensors.size > 0;
  ui.grid.dataset.charts = String(shown.length);
}

for (const el of [ui.filter, ui.type, ui.badOnly]) el.addEventListener('input', () => (viewDirty = true));

// --- loops ---------------------------------------------------------------------------------------------------

let lastFrame = 0;
function frame(ts) {
  requestAnimationFrame(frame);
  if (ts - lastFrame < CFG.frameMs * 0.75) return; // ~30/s at 60 Hz, without skipping two in a row
  lastFrame = ts;
  const t0 = performance.now();
  const now = Date.now();
  let drawn = 0;
  for (const card of cards.values()) {
    if (card.visible) {
      card.draw(now);
      drawn++;
    }
  }
  if (!drawn) return;
  stats.drawMs = stats.drawMs * 0.9 + (performance.now() - t0) * 0.1;
  stats.frames++;
}

function fmtMs(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (Math.abs(ms) < 10) return `${ms.toFixed(1)} ms`;
  if (Math.abs(ms) < 1000) return `${ms.toFixed(0)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}
const nf = new Intl.NumberFormat('en-US');

let tick = 0;
let lastFrames = 0, lastFramesAt = performance.now(), fps = 0;
function everyQuarterSecond() {
  tick++;
  const now = Date.now();
  const p = performance.now();
  // readings/s over the last second (samples every 250 ms)
  stats.rateSamples.push([p, stats.received]);
  while (stats.rateSamples.length > 5) stats.rateSamples.shift();
  const [t0, n0] = stats.rateSamples[0];
  stats.rate = p > t0 ? ((stats.received - n0) * 1000) / (p - t0) : 0;
  renderStatus();
  if (viewDirty || tick % 2 === 0) updateView();

  ui.rate.textContent = nf.format(Math.round(stats.rate));
  ui.rateSub.textContent = `${nf.format(stats.messages)} messages`;
  ui.received.textContent = nf.format(stats.received);
  const extra = [];
  if (stats.late) extra.push(`${nf.format(stats.late)} older than 60 s`);
  if (stats.ignored) extra.push(`${nf.format(stats.ignored)} ignored`);
  ui.receivedSub.textContent = extra.join(' · ') || 'readings';
  ui.sensors.textContent = nf.format(sensors.size);
  ui.sensorsSub.textContent = stats.untracked
    ? `${nf.format(stats.untracked)} readings untracked (limit ${CFG.maxSensors})`
    : `tracked (limit ${nf.format(CFG.maxSensors)})`;

  if (tick % 2 === 0) {
    computeLatency(now);
    ui.p50.textContent = fmtMs(lat.p50);
    ui.p99.textContent = fmtMs(lat.p99);
    ui.latSub.textContent = lat.n
      ? `${nf.format(lat.n)} readings over ${(lat.span / 1000).toFixed(1)} s`
      : 'no readings in the last 10 s';
    fps = ((stats.frames - lastFrames) * 1000) / (p - lastFramesAt);
    lastFrames = stats.frames;
    lastFramesAt = p;
    ui.render.textContent = `${stats.drawMs.toFixed(1)} ms`;
    const heap = performance.memory ? ` · JS heap ${(performance.memory.usedJSHeapSize / 1048576).toFixed(0)} MB` : '';
    ui.renderSub.textContent = `${fps.toFixed(0)} fps${heap}`;
    ui.reports.textContent = nf.format(rep.values);
    ui.reportsSub.textContent = `${rep.sent} POST /latency` + (rep.failed ? ` · ${rep.failed} failed (${rep.error})` : '');
    if (ui.raw.open && lastReading) ui.rawJson.textContent = JSON.stringify(lastReading, null, 2);
  }
  for (const card of cards.values()) card.updateText(now);
  if (tick % 4 === 0) {
    for (const s of sensors.values()) {
      s.rate = s.count - s.countAtTick;
      s.countAtTick = s.count;
    }
    forgetSilentSensors(now);
    report();
  }
}

// --- start ---------------------------------------------------------------------------------------------------

const defaultWs = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
ui.wsUrl.value = params.get('ws') || defaultWs;
ui.clientId.value = params.get('client_id') || `dashboard-${Math.random().toString(16).slice(2, 8)}`;
ui.token.value = params.get('token') || '';
ui.toggle.addEventListener('click', () => setWanted(!state.wanted));

// for tests and the curious: sizes of everything the page keeps
window.dashboard = {
  state,
  stats: () => ({
    conn: state.conn, wanted: state.wanted, received: stats.received, messages: stats.messages,
    reconnects: state.reconnects,
    sensors: sensors.size, untracked: stats.untracked, late: stats.late, charts: cards.size,
    latencySamples: lat.size, latencyCap: CFG.latencyCap, pendingReport: rep.n, reportCap: CFG.reportMax,
    reportsSent: rep.sent, latencyValuesReported: rep.values, reportsFailed: rep.failed,
    frames: stats.frames, maxCharts: CFG.maxCharts, maxSensors: CFG.maxSensors,
    slotsPerSensor: sensors.size ? sensors.values().next().value.series.ids.length : 0,
  }),
};

renderStatus();
updateView();
setInterval(everyQuarterSecond, 250);
requestAnimationFrame(frame);
if (params.get('autostart') !== '0') setWanted(true);
