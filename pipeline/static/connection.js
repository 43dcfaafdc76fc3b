// connection.js: the websocket, kept apart from the user's wish.
//
// `state.wanted` (the user's Start/Stop) is kept apart from `state.conn`, the real websocket state
// (idle | connecting | open | waiting | closing | failed). While wanted, every close that is not a refusal of
// the token schedules a reconnect with exponential backoff (250 ms doubling to 5 s, jittered); Stop cancels
// whatever is pending and closes the socket.

import { CFG } from './config.js';

export const state = {
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

// set by start(): the URL to open, what to do with each message, and whom to tell of a state change
let hooks = { url: () => '', onMessage: () => {}, onChange: () => {} };

export function start(h) {
  hooks = h;
  window.addEventListener('online', () => {
    if (state.wanted && state.conn === 'waiting') connect();
  });
}

export function setWanted(on) {
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
  hooks.onChange();
}

function connect() {
  clearTimeout(state.timer);
  state.timer = 0;
  let ws;
  try {
    ws = new WebSocket(hooks.url());
  } catch (e) {
    state.conn = 'failed';
    state.error = `invalid websocket URL: ${e.message}`;
    hooks.onChange();
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
    hooks.onChange();
  };
  ws.onmessage = (ev) => {
    if (state.ws === ws) hooks.onMessage(ev.data);
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
    hooks.onChange();
  };
  hooks.onChange();
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

// the human sentence for the current state (the status pill)
export function statusText() {
  const { conn } = state;
  if (conn === 'idle') return 'stopped';
  if (conn === 'connecting') return state.attempt ? `connecting… (attempt ${state.attempt + 1})` : 'connecting…';
  if (conn === 'open') return 'live';
  if (conn === 'closing') return 'stopping…';
  if (conn === 'failed') return state.error;
  const s = Math.max(0, (state.retryAt - performance.now()) / 1000);
  return `reconnecting in ${s.toFixed(1)} s · attempt ${state.attempt} · ${state.lastClose}`;
}
