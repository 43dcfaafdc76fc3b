// The telemetry-bench live dashboard: the entry point. Plain ES modules, no dependencies; served by the backend
// at /. This file wires the parts together and runs the loops; each part is a module of one job:
//
//   config.js      settings from the query string, the reading types
//   connection.js  the websocket: the user's Start/Stop (`wanted`) apart from its real state, reconnects
//   data.js        messages → per-sensor rings of 100 ms buckets (chart.js's Series), counters
//   latency.js     receipt − reading_timestamp: p50/p99 over 10 s, reports to POST /latency
//   view.js        the DOM: status, counters, one Card (<canvas>) per charted sensor
//   chart.js       the ring (Series) and its drawing
//
// Loops: charts are drawn per animation frame (at most 30 per s), never per message; counters every 250 ms;
// latency percentiles every 500 ms; per-sensor rates, forgetting silent sensors and the latency report every 1 s.
//
// Query parameters: ?token=<api token> (sent as ?token= on the websocket, as a Bearer header on POST /latency),
// ?ws=<websocket url>, ?client_id=<id>, ?autostart=0 (open stopped), ?max_charts=<n>, ?max_sensors=<n>.

import { CFG, params } from './config.js';
import * as connection from './connection.js';
import { state } from './connection.js';
import { changed, everySecond, onMessage, sampleRate, sensors, stats } from './data.js';
import { computeLatency, lat, rep, report } from './latency.js';
import { cards, renderCounters, renderPanels, renderStatus, ui, updateView } from './view.js';

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

let tick = 0;
let lastFrames = 0, lastFramesAt = performance.now();
function everyQuarterSecond() {
  tick++;
  const now = Date.now();
  const p = performance.now();
  sampleRate(p);
  renderStatus();
  if (changed.sensors || tick % 2 === 0) updateView();
  renderCounters();
  if (tick % 2 === 0) {
    computeLatency(now);
    const fps = ((stats.frames - lastFrames) * 1000) / (p - lastFramesAt);
    lastFrames = stats.frames;
    lastFramesAt = p;
    renderPanels(fps);
  }
  for (const card of cards.values()) card.updateText(now);
  if (tick % 4 === 0) {
    everySecond(now);
    if (state.conn === 'open') report(latencyUrl(), ui.token.value);
  }
}

// --- start ---------------------------------------------------------------------------------------------------

const defaultWs = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
ui.wsUrl.value = params.get('ws') || defaultWs;
ui.clientId.value = params.get('client_id') || `dashboard-${Math.random().toString(16).slice(2, 8)}`;
ui.token.value = params.get('token') || '';
connection.start({ url: wsUrl, onMessage, onChange: renderStatus });
ui.toggle.addEventListener('click', () => connection.setWanted(!state.wanted));

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
if (params.get('autostart') !== '0') connection.setWanted(true);
