import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OrderBookState } from '../lib/book.js';

const snapshot = {
  type: 'depth',
  snapshot: true,
  seq: 10,
  bids: [['64000', '1'], ['63999.5', '2'], ['63990', '0.5']],
  asks: [['64001', '1.5'], ['64002.5', '0.25']],
};

test('snapshot gives best-first sides and the spread', () => {
  const book = new OrderBookState();
  assert.equal(book.apply(snapshot), 'snapshot');
  assert.equal(book.seq, 10);
  assert.equal(book.bestBid(), '64000');
  assert.equal(book.bestAsk(), '64001');
  assert.equal(book.spread(), '1');
  assert.deepEqual(book.rows('bids', 10).map((r) => [r.px, r.qty, r.total]), [
    ['64000', '1', '1'],
    ['63999.5', '2', '3'],
    ['63990', '0.5', '3.5'],
  ]);
});

test('deltas insert, update and remove levels in order', () => {
  const book = new OrderBookState();
  book.apply(snapshot);
  assert.equal(book.apply({ snapshot: false, seq: 11, bids: [['63999.5', '0'], ['63995', '4']], asks: [] }), 'applied');
  assert.equal(book.apply({ snapshot: false, seq: 12, bids: [], asks: [['64000.5', '3'], ['64001', '0.5']] }), 'applied');
  assert.deepEqual(book.rows('bids', 10).map((r) => r.px), ['64000', '63995', '63990']);
  assert.deepEqual(book.rows('asks', 10).map((r) => [r.px, r.qty]), [['64000.5', '3'], ['64001', '0.5'], ['64002.5', '0.25']]);
  assert.equal(book.seq, 12);
});

test('a delta before any snapshot waits, a covered one is stale', () => {
  const book = new OrderBookState();
  assert.equal(book.apply({ snapshot: false, seq: 5, bids: [['1', '1']], asks: [] }), 'waiting');
  book.apply(snapshot);
  assert.equal(book.apply({ snapshot: false, seq: 10, bids: [['64000', '9']], asks: [] }), 'stale');
  assert.equal(book.bestBid(), '64000');
  assert.equal(book.rows('bids', 1)[0].qty, '1');
});

test('a seq gap is reported and leaves the book untouched until the replay', () => {
  const book = new OrderBookState();
  book.apply(snapshot);
  assert.equal(book.apply({ snapshot: false, seq: 12, bids: [['64000', '0']], asks: [] }), 'gap');
  assert.equal(book.gap, true);
  assert.equal(book.seq, 10);
  assert.equal(book.bestBid(), '64000');
  // The replay of 11, 12 after resubscribing with sinceSeq=10 closes the gap.
  assert.equal(book.apply({ snapshot: false, seq: 11, bids: [['63999.5', '0']], asks: [] }), 'applied');
  assert.equal(book.gap, false);
  assert.equal(book.apply({ snapshot: false, seq: 12, bids: [['64000', '0']], asks: [] }), 'applied');
  assert.equal(book.bestBid(), '63990');
});

test('a fresh snapshot replaces everything after a gap', () => {
  const book = new OrderBookState();
  book.apply(snapshot);
  book.apply({ snapshot: false, seq: 15, bids: [], asks: [] });
  assert.equal(book.apply({ snapshot: true, seq: 20, bids: [['1', '1']], asks: [] }), 'snapshot');
  assert.equal(book.gap, false);
  assert.equal(book.bestAsk(), null);
  assert.equal(book.spread(), null);
  assert.equal(book.apply({ snapshot: false, seq: 21, bids: [], asks: [['2', '1']] }), 'applied');
});

test('grouping by tick multiples rounds bids down and asks up', () => {
  const book = new OrderBookState();
  book.apply(snapshot);
  assert.deepEqual(book.rows('bids', 10, '5').map((r) => [r.px, r.qty, r.total]), [
    ['64000', '1', '1'],
    ['63995', '2', '3'],
    ['63990', '0.5', '3.5'],
  ]);
  assert.deepEqual(book.rows('asks', 10, '10').map((r) => [r.px, r.qty]), [['64010', '1.75']]);
  assert.equal(book.rows('bids', 2, '5').length, 2);
});

test('malformed levels are ignored rather than corrupting the book', () => {
  const book = new OrderBookState();
  book.apply({ snapshot: true, seq: 1, bids: [['x', '1'], ['10', '2'], null], asks: 'nope' });
  assert.deepEqual(book.rows('bids', 5).map((r) => r.px), ['10']);
  assert.equal(book.bestAsk(), null);
});
