// chart.js: the dashboard's time-series store and chart, on <canvas>, no dependencies.
//
// Store: each sensor has a Series, a fixed ring of 100 ms buckets covering the last 60 s (min, max, last value
// and the OR of the status bitmasks of the readings that fell in each bucket). Its memory is fixed at creation
// (~13 kB) whatever the reading rate, and a bucket slot is reused once its time has left the window, so there is
// nothing to trim.
// Chart: drawSeries() draws one Series for a given "now": the min–max envelope of each bucket and a line
// through the buckets' last values, each bucket coloured by its worst status, on a "seconds ago" axis.

export const WINDOW_MS = 60_000;
export const BUCKET_MS = 100;
export const SLOTS = WINDOW_MS / BUCKET_MS + 2; // the window spans at most 601 buckets
const GAP_BUCKETS = 50; // no reading for 5 s: the line breaks

// status_bitmask: OK 0, WARNING 1, CRITICAL 2, OFFLINE 4. Severity index: the worst bit set.
export const STATUS = [
  { name: 'OK', color: '#3fb950' },
  { name: 'WARNING', color: '#d29922' },
  { name: 'CRITICAL', color: '#f85149' },
  { name: 'OFFLINE', color: '#8b949e' },
];

export function severity(mask) {
  return mask & 4 ? 3 : mask & 2 ? 2 : mask & 1 ? 1 : 0;
}

export class Series {
  constructor() {
    this.ids = new Float64Array(SLOTS).fill(-1); // bucket number (ms / BUCKET_MS) held by each slot
    this.lo = new Float32Array(SLOTS);
    this.hi = new Float32Array(SLOTS);
    this.last = new Float32Array(SLOTS);
    this.mask = new Uint8Array(SLOTS);
    this.lastT = -Infinity; // the newest reading (by its timestamp)
    this.lastValue = NaN;
    this.lastMask = 0;
  }

  /** Add one reading (t in epoch ms). False when its bucket has already left the ring (too old). */
  add(t, v, mask) {
    const b = Math.floor(t / BUCKET_MS);
    const slot = b % SLOTS;
    const held = this.ids[slot];
    const m = mask & 0xff;
    if (held === b) {
      if (v < this.lo[slot]) this.lo[slot] = v;
      if (v > this.hi[slot]) this.hi[slot] = v;
      this.last[slot] = v;
      this.mask[slot] |= m;
    } else if (held < b) {
      this.ids[slot] = b;
      this.lo[slot] = this.hi[slot] = this.last[slot] = v;
      this.mask[slot] = m;
    } else {
      return false;
    }
    if (t >= this.lastT) {
      this.lastT = t;
      this.lastValue = v;
      this.lastMask = mask;
    }
    return true;
  }
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

function label(v, step) {
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(decimals);
}

const THEME = {
  grid: 'rgba(139, 148, 158, 0.18)',
  axis: '#8b949e',
  font: '10px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace',
};

// Scratch paths, one per severity, reused by every draw.
const lines = STATUS.map(() => []);

/**
 * Draw `series` on a 2D context of a canvas whose CSS size is w×h (the caller keeps the backing store at
 * w·dpr × h·dpr). Returns the number of buckets drawn.
 */
export function drawSeries(ctx, w, h, dpr, series, now) {
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const padL = 46, padR = 8, padT = 6, padB = 15;
  const pw = w - padL - padR, ph = h - padT - padB;
  if (pw <= 10 || ph <= 10) return 0;
  const t0 = now - WINDOW_MS;
  const bStart = Math.floor(t0 / BUCKET_MS), bEnd = Math.floor(now / BUCKET_MS);
  const { ids, lo, hi, last, mask } = series;

  let vmin = Infinity, vmax = -Infinity, n = 0;
  for (let b = bStart; b <= bEnd; b++) {
    const s = b % SLOTS;
    if (ids[s] !== b) continue;
    if (lo[s] < vmin) vmin = lo[s];
    if (hi[s] > vmax) vmax = hi[s];
    n++;
  }

  ctx.font = THEME.font;
  ctx.lineWidth = 1;
  // time grid: fixed "seconds ago" lines; the data moves past them
  ctx.strokeStyle = THEME.grid;
  ctx.fillStyle = THEME.axis;
  ctx.textBaseline = 'top';
  ctx.beginPath();
  for (let sAgo = 60; sAgo >= 0; sAgo -= 15) {
    const x = Math.round(padL + pw * (1 - sAgo / 60)) + 0.5;
    ctx.moveTo(x, padT);
    ctx.lineTo(x, padT + ph);
    ctx.textAlign = sAgo === 60 ? 'left' : sAgo === 0 ? 'right' : 'center';
    ctx.fillText(sAgo === 0 ? 'now' : `-${sAgo}s`, x, padT + ph + 3);
  }
  ctx.stroke();

  if (n === 0) {
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText('no readings in the last 60 s', padL + pw / 2, padT + ph / 2);
    return 0;
  }

  // value axis: nice steps, range snapped to them (steady while the data moves)
  let span = vmax - vmin;
  if (!(span > 0)) span = Math.max(Math.abs(vmax) * 0.02, 1);
  const step = niceStep(span / 3);
  let ylo = Math.floor(vmin / step) * step, yhi = Math.ceil(vmax / step) * step;
  if (yhi - ylo < step) yhi = ylo + step;
  if (vmin - ylo < step * 0.05) ylo -= step / 2;
  if (yhi - vmax < step * 0.05) yhi += step / 2;
  const ky = ph / (yhi - ylo);
  const y = (v) => padT + (yhi - v) * ky;

  ctx.beginPath();
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let v = Math.ceil(ylo / step) * step; v <= yhi + step * 1e-6; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.moveTo(padL, yy);
    ctx.lineTo(padL + pw, yy);
    ctx.fillText(label(v, step), padL - 5, yy);
  }
  ctx.stroke();

  ctx.save();
  ctx.beginPath();
  ctx.rect(padL, padT - 2, pw, ph + 4);
  ctx.clip();
  const kx = pw / WINDOW_MS;
  const x0 = padL + ((bStart + 0.5) * BUCKET_MS - t0) * kx;
  const dx = BUCKET_MS * kx;

  // envelopes (one thin bar per bucket), batched per severity
  ctx.lineWidth = Math.max(1, dx);
  ctx.lineCap = 'butt';
  for (let sev = 0; sev < 4; sev++) {
    ctx.beginPath();
    let any = false;
    for (let b = bStart; b <= bEnd; b++) {
      const s = b % SLOTS;
      if (ids[s] !== b || hi[s] === lo[s] || severity(mask[s]) !== sev) continue;
      const x = x0 + (b - bStart) * dx;
      ctx.moveTo(x, y(hi[s]));
      ctx.lineTo(x, y(lo[s]));
      any = true;
    }
    if (any) {
      ctx.strokeStyle = STATUS[sev].color;
      ctx.globalAlpha = 0.28;
      ctx.stroke();
    }
  }
  ctx.globalAlpha = 1;

  // line through the last values; a segment takes the colour of the bucket it ends in
  for (const l of lines) l.length = 0;
  let px = NaN, py = NaN, pb = -Infinity, lx = 0, ly = 0, lsev = 0;
  for (let b = bStart; b <= bEnd; b++) {
    const s = b % SLOTS;
    if (ids[s] !== b) continue;
    const x = x0 + (b - bStart) * dx, yy = y(last[s]), sev = severity(mask[s]);
    if (b - pb <= GAP_BUCKETS) lines[sev].push(px, py, x, yy);
    else lines[sev].push(x - 0.75, yy, x + 0.75, yy); // an isolated point: a short tick
    px = x; py = yy; pb = b;
    lx = x; ly = yy; lsev = sev;
  }
  ctx.lineWidth = 1.5;
  ctx.lineCap = 'round';
  for (let sev = 0; sev < 4; sev++) {
    const seg = lines[sev];
    if (!seg.length) continue;
    ctx.beginPath();
    for (let i = 0; i < seg.length; i += 4) {
      ctx.moveTo(seg[i], seg[i + 1]);
      ctx.lineTo(seg[i + 2], seg[i + 3]);
    }
    ctx.strokeStyle = STATUS[sev].color;
    ctx.stroke();
  }
  // the newest bucket's point
  ctx.beginPath();
  ctx.arc(lx, ly, 2.5, 0, 2 * Math.PI);
  ctx.fillStyle = STATUS[lsev].color;
  ctx.fill();
  ctx.restore();
  return n;
}
