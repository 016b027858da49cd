import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExchangeSocket, backoffDelay, BACKOFF_MAX_MS } from '../lib/ws.js';

class FakeTimers {
  constructor() { this.queue = []; this.id = 0; }
  setTimeout(fn, ms) { const id = ++this.id; this.queue.push({ id, fn, ms }); return id; }
  clearTimeout(id) { this.queue = this.queue.filter((t) => t.id !== id); }
  runNext() { const t = this.queue.shift(); t.fn(); return t.ms; }
}

function fakeSocketClass(instances) {
  return class FakeWs {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; instances.push(this); }
    open() { this.readyState = 1; this.onopen(); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() { this.readyState = 3; this.onclose({}); }
    server(msg) { this.onmessage({ data: JSON.stringify(msg) }); }
  };
}

test('backoff doubles to a cap with bounded jitter', () => {
  assert.equal(backoffDelay(0, () => 0.5), 500);
  assert.equal(backoffDelay(1, () => 0.5), 1000);
  assert.equal(backoffDelay(3, () => 0.5), 4000);
  assert.equal(backoffDelay(30, () => 0.5), BACKOFF_MAX_MS);
  assert.equal(backoffDelay(0, () => 0), 400);
  assert.equal(backoffDelay(0, () => 1), 600);
});

test('subscribes on open, resumes market channels with sinceSeq after a drop', () => {
  const sockets = [];
  const timers = new FakeTimers();
  let seq = null;
  const s = new ExchangeSocket('ws://x/ws/', { WebSocketImpl: fakeSocketClass(sockets), timers, resumeSeq: () => seq });
  const statuses = [];
  s.addEventListener('status', (e) => statuses.push(e.detail.status + (e.detail.restored ? '+restored' : '')));
  s.subscribe('market.BTC-PERP.paper');
  s.subscribe('trader.abc');
  s.connect();
  sockets[0].open();
  assert.deepEqual(sockets[0].sent, [
    { action: 'subscribe', channel: 'market.BTC-PERP.paper' },
    { action: 'subscribe', channel: 'trader.abc' },
  ]);
  seq = 41;
  sockets[0].close();
  assert.equal(s.status, 'reconnecting');
  // The ping timer was cleared on close; the only timer left is the reconnect.
  assert.equal(timers.queue.length, 1);
  timers.runNext();
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [
    { action: 'subscribe', channel: 'market.BTC-PERP.paper', sinceSeq: 41 },
    { action: 'subscribe', channel: 'trader.abc' },
  ]);
  assert.deepEqual(statuses, ['connecting', 'open', 'reconnecting', 'connecting', 'open+restored']);
});

test('consecutive failures back off further; success resets', () => {
  const sockets = [];
  const timers = new FakeTimers();
  const s = new ExchangeSocket('ws://x/ws/', { WebSocketImpl: fakeSocketClass(sockets), timers });
  s.connect();
  sockets[0].close();
  const first = timers.runNext();
  sockets[1].close();
  const second = timers.runNext();
  assert.ok(second > first, `${second} > ${first}`);
  sockets[2].open();
  sockets[2].close();
  assert.ok(timers.queue.at(-1).ms <= 600);
});

test('resubscribe after a gap leaves and rejoins from the last good seq', () => {
  const sockets = [];
  const s = new ExchangeSocket('ws://x/ws/', { WebSocketImpl: fakeSocketClass(sockets), timers: new FakeTimers() });
  s.subscribe('market.ETH-PERP');
  s.connect();
  sockets[0].open();
  s.resubscribe('market.ETH-PERP', 7);
  assert.deepEqual(sockets[0].sent.slice(1), [
    { action: 'unsubscribe', channel: 'market.ETH-PERP' },
    { action: 'subscribe', channel: 'market.ETH-PERP', sinceSeq: 7 },
  ]);
  const got = [];
  s.addEventListener('message', (e) => got.push(e.detail.type));
  sockets[0].server({ type: 'depth', seq: 8 });
  sockets[0].onmessage({ data: 'not json' });
  assert.deepEqual(got, ['depth']);
});

test('a silent connection is closed after a ping goes unanswered', () => {
  const sockets = [];
  const timers = new FakeTimers();
  const s = new ExchangeSocket('ws://x/ws/', { WebSocketImpl: fakeSocketClass(sockets), timers });
  s.connect();
  sockets[0].open();
  timers.runNext(); // ping
  assert.deepEqual(sockets[0].sent.at(-1), { action: 'ping' });
  const pong = timers.queue.find((t) => t.ms === 10000);
  assert.ok(pong);
  timers.clearTimeout(pong.id);
  pong.fn();
  assert.equal(s.status, 'reconnecting');
});
