// One WebSocket to /ws/ for the page: subscribe/unsubscribe by channel, keepalive
// pings, reconnect with exponential backoff and jitter, and on reconnect resubscribe
// every channel, market channels with `sinceSeq` so the server replays what was missed.

export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 20000;
const PONG_TIMEOUT_MS = 10000;

/** Delay before reconnect attempt `n` (0-based): doubling, capped, with ±20 % jitter. */
export function backoffDelay(n, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(n, 10));
  return Math.round(base * (0.8 + 0.4 * random()));
}

export class ExchangeSocket extends EventTarget {
  /**
   * `url`: the ws:// URL of /ws/. `options.resumeSeq(channel)` returns the last applied
   * seq of a market channel (or null) for `sinceSeq` on resubscribe.
   */
  constructor(url, { WebSocketImpl = globalThis.WebSocket, timers = globalThis, resumeSeq = () => null } = {}) {
    super();
    this.url = url;
    this.WebSocketImpl = WebSocketImpl;
    this.timers = timers;
    this.resumeSeq = resumeSeq;
    this.channels = new Set();
    this.status = 'idle';
    this.attempt = 0;
    this.everOpened = false;
    this.ws = null;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.stopped = false;
  }

  connect() {
    this.stopped = false;
    this.setStatus('connecting');
    const ws = new this.WebSocketImpl(this.url);
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      const restored = this.everOpened;
      this.everOpened = true;
      this.setStatus('open', { restored });
      for (const channel of this.channels) this.sendSubscribe(channel, true);
      this.schedulePing();
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.receive(event.data);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.clearTimers();
      this.ws = null;
      if (this.stopped) {
        this.setStatus('closed');
        return;
      }
      const delay = backoffDelay(this.attempt++);
      this.setStatus('reconnecting', { delay });
      this.reconnectTimer = this.timers.setTimeout(() => this.connect(), delay);
    };
    ws.onerror = () => {
      // The close event follows; reconnecting happens there.
    };
  }

  /** Raw text from the socket (or from a test): parse and dispatch. */
  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (this.pongTimer) {
      this.timers.clearTimeout(this.pongTimer);
      this.pongTimer = null;
    }
    this.dispatchEvent(new CustomEvent('message', { detail: msg }));
  }

  setStatus(status, extra = {}) {
    this.status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: { status, ...extra } }));
  }

  send(body) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(body));
      return true;
    }
    return false;
  }

  sendSubscribe(channel, resume) {
    const body = { action: 'subscribe', channel };
    if (resume && channel.startsWith('market.')) {
      const seq = this.resumeSeq(channel);
      if (Number.isInteger(seq)) body.sinceSeq = seq;
    }
    this.send(body);
  }

  subscribe(channel) {
    if (this.channels.has(channel)) return;
    this.channels.add(channel);
    this.sendSubscribe(channel, false);
  }

  unsubscribe(channel) {
    if (!this.channels.delete(channel)) return;
    this.send({ action: 'unsubscribe', channel });
  }

  /** After a seq gap: leave and rejoin the channel, asking for the deltas after `seq`. */
  resubscribe(channel, sinceSeq = null) {
    if (!this.channels.has(channel)) return;
    this.send({ action: 'unsubscribe', channel });
    const body = { action: 'subscribe', channel };
    if (Number.isInteger(sinceSeq)) body.sinceSeq = sinceSeq;
    this.send(body);
  }

  schedulePing() {
    this.pingTimer = this.timers.setTimeout(() => {
      if (this.send({ action: 'ping' })) {
        // No answer at all within the timeout: the connection is dead without a close.
        this.pongTimer = this.timers.setTimeout(() => this.ws && this.ws.close(), PONG_TIMEOUT_MS);
      }
      this.schedulePing();
    }, PING_EVERY_MS);
  }

  clearTimers() {
    for (const t of ['reconnectTimer', 'pingTimer', 'pongTimer']) {
      if (this[t]) this.timers.clearTimeout(this[t]);
      this[t] = null;
    }
  }

  /** Drop the connection as if the network failed (reconnects). */
  drop() {
    if (this.ws) this.ws.close();
  }

  close() {
    this.stopped = true;
    this.clearTimers();
    if (this.ws) this.ws.close();
  }
}
