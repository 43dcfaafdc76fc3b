// latency.js: end-to-end latency as the page sees it (time of receipt − reading_timestamp).
//
// Samples are kept with their receipt times for p50/p99 over the last 10 s (a fixed ring), and sampled into a
// reservoir sent to POST /latency once a second as {"latencies": [seconds, ...]}, at most 5,000 values a report.

import { CFG } from './config.js';

// latency samples (ms) with their receipt times, for the page's own percentiles
export const lat = {
  t: new Float64Array(CFG.latencyCap), v: new Float64Array(CFG.latencyCap), head: 0, size: 0,
  scratch: new Float64Array(CFG.latencyCap), p50: NaN, p99: NaN, n: 0, span: 0,
};
// the next POST /latency: a reservoir of seconds
export const rep = {
  buf: new Float64Array(CFG.reportMax), n: 0, seen: 0, inflight: false, sent: 0, values: 0, failed: 0, error: '',
};

export function recordLatency(ms, now) {
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

export function computeLatency(now) {
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

// POST the reservoir to `url` (with the bearer `token`, if any); one report in flight at a time
export async function report(url, token) {
  if (rep.inflight || rep.n === 0) return;
  const values = Array.from(rep.buf.subarray(0, rep.n), (x) => Math.round(x * 1e6) / 1e6);
  rep.n = 0;
  rep.seen = 0;
  rep.inflight = true;
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const res = await fetch(url, {
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
