// view.js: the page's DOM. The status pill and the counters, and one Card (a <canvas> chart) per charted sensor:
// the sensors matching the filter, sorted by id, at most CFG.maxCharts of them.

import { drawSeries, severity, STATUS } from './chart.js';
import { CFG } from './config.js';
import { state, statusText } from './connection.js';
import { changed, latest, sensors, stats } from './data.js';
import { lat, rep } from './latency.js';

const $ = (id) => document.getElementById(id);
export const ui = {
  conn: $('conn'), toggle: $('toggle'), wsUrl: $('ws-url'), clientId: $('client-id'), token: $('token'),
  rate: $('rate'), rateSub: $('rate-sub'), received: $('received'), receivedSub: $('received-sub'),
  p50: $('lat-p50'), p99: $('lat-p99'), latSub: $('lat-sub'), sensors: $('sensors'), sensorsSub: $('sensors-sub'),
  render: $('render'), renderSub: $('render-sub'), reports: $('reports'), reportsSub: $('reports-sub'),
  filter: $('filter'), type: $('type'), badOnly: $('bad-only'), note: $('view-note'), grid: $('grid'),
  empty: $('empty'), raw: $('raw'), rawJson: $('raw-json'),
};
export const cards = new Map(); // sensor_id → Card (only the charted ones)

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

function fmtMs(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (Math.abs(ms) < 10) return `${ms.toFixed(1)} ms`;
  if (Math.abs(ms) < 1000) return `${ms.toFixed(0)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}
const nf = new Intl.NumberFormat('en-US');

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

// which sensors are charted, in which order (after a filter change or a change in the set of sensors)
export function updateView() {
  changed.sensors = false;
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

for (const el of [ui.filter, ui.type, ui.badOnly]) el.addEventListener('input', () => (changed.sensors = true));

export function renderStatus() {
  const { conn, wanted } = state;
  const text = statusText();
  if (ui.conn.textContent !== text) {
    ui.conn.textContent = text;
    ui.conn.title = text;
  }
  ui.conn.dataset.state = conn;
  document.body.dataset.conn = conn;
  document.body.dataset.wanted = wanted ? '1' : '0';
  ui.toggle.textContent = wanted ? 'Stop streaming' : 'Start streaming';
  ui.toggle.classList.toggle('stop', wanted);
  for (const el of [ui.wsUrl, ui.clientId, ui.token]) el.disabled = wanted;
}

// the counters that change with every message (every 250 ms)
export function renderCounters() {
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
}

// the slower panels (every 500 ms): latency percentiles, rendering cost, reports, the raw reading
export function renderPanels(fps) {
  ui.p50.textContent = fmtMs(lat.p50);
  ui.p99.textContent = fmtMs(lat.p99);
  ui.latSub.textContent = lat.n
    ? `${nf.format(lat.n)} readings over ${(lat.span / 1000).toFixed(1)} s`
    : 'no readings in the last 10 s';
  ui.render.textContent = `${stats.drawMs.toFixed(1)} ms`;
  const heap = performance.memory ? ` · JS heap ${(performance.memory.usedJSHeapSize / 1048576).toFixed(0)} MB` : '';
  ui.renderSub.textContent = `${fps.toFixed(0)} fps${heap}`;
  ui.reports.textContent = nf.format(rep.values);
  ui.reportsSub.textContent = `${rep.sent} POST /latency` + (rep.failed ? ` · ${rep.failed} failed (${rep.error})` : '');
  if (ui.raw.open && latest.reading) ui.rawJson.textContent = JSON.stringify(latest.reading, null, 2);
}
