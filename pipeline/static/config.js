// config.js: the page's settings (from the URL's query parameters) and the reading types it charts.

export const params = new URLSearchParams(location.search);

function intParam(name, dflt, lo, hi) {
  const v = Number.parseInt(params.get(name) ?? '', 10);
  return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt;
}

export const CFG = {
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

export const KINDS = {
  TEMPERATURE: { label: 'temperature', value: (r) => r.temperature, unit: (r) => r.temp_unit },
  PRESSURE: { label: 'pressure', value: (r) => r.pressure, unit: (r) => r.pressure_unit },
  VELOCITY: {
    label: 'velocity |v|',
    value: (r) => Math.sqrt(r.velocity_x * r.velocity_x + r.velocity_y * r.velocity_y + r.velocity_z * r.velocity_z),
    unit: (r) => r.velocity_unit,
  },
};
