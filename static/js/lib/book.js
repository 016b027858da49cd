// The client's copy of one order book: a snapshot, then deltas that must follow each
// other by exactly one `seq`. A delta that skips ahead means a message was lost: the
// book reports a gap, keeps its last good state and waits for a replay (the deltas after
// its seq) or a fresh snapshot.

import { add, cmp, floorToStep, ceilToStep, isZero, parse, sub, toString } from './decimal.js';

/** A side as a price-sorted array of [px, qty], best first. */
class Side {
  constructor(descending) {
    this.descending = descending;
    this.levels = [];
  }

  clear() {
    this.levels = [];
  }

  order(a, b) {
    return this.descending ? cmp(b, a) : cmp(a, b);
  }

  /** Index of `px`, or -(insertion point) - 1, by binary search. */
  find(px) {
    let lo = 0;
    let hi = this.levels.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = this.order(this.levels[mid][0], px);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -lo - 1;
  }

  set(px, qty) {
    const i = this.find(px);
    if (isZero(qty)) {
      if (i >= 0) this.levels.splice(i, 1);
    } else if (i >= 0) {
      this.levels[i][1] = qty;
    } else {
      this.levels.splice(-i - 1, 0, [px, qty]);
    }
  }
}

function checkLevels(levels) {
  if (!Array.isArray(levels)) return [];
  return levels.filter(
    (l) => Array.isArray(l) && l.length >= 2 && parse(l[0]) !== null && parse(l[1]) !== null,
  );
}

export class OrderBookState {
  constructor() {
    this.bids = new Side(true);
    this.asks = new Side(false);
    this.seq = null;
    this.gap = false;
  }

  reset() {
    this.bids.clear();
    this.asks.clear();
    this.seq = null;
    this.gap = false;
  }

  /**
   * Apply one `depth` message. Returns what happened:
   * "snapshot" | "applied" | "stale" (already covered) | "gap" (a message is missing:
   * resubscribe from `seq`) | "waiting" (no snapshot yet).
   */
  apply(msg) {
    if (msg.snapshot) {
      this.bids.clear();
      this.asks.clear();
      for (const [px, qty] of checkLevels(msg.bids)) this.bids.set(toString(px), toString(qty));
      for (const [px, qty] of checkLevels(msg.asks)) this.asks.set(toString(px), toString(qty));
      this.seq = msg.seq;
      this.gap = false;
      return 'snapshot';
    }
    if (this.seq === null) return 'waiting';
    if (msg.seq <= this.seq) return 'stale';
    if (msg.seq !== this.seq + 1) {
      this.gap = true;
      return 'gap';
    }
    for (const [px, qty] of checkLevels(msg.bids)) this.bids.set(toString(px), toString(qty));
    for (const [px, qty] of checkLevels(msg.asks)) this.asks.set(toString(px), toString(qty));
    this.seq = msg.seq;
    this.gap = false;
    return 'applied';
  }

  bestBid() {
    return this.bids.levels.length ? this.bids.levels[0][0] : null;
  }

  bestAsk() {
    return this.asks.levels.length ? this.asks.levels[0][0] : null;
  }

  spread() {
    const bid = this.bestBid();
    const ask = this.bestAsk();
    if (bid === null || ask === null) return null;
    return sub(ask, bid);
  }

  /**
   * Up to `n` display rows of one side, best first: [{px, qty, total}], where `total`
   * is the running sum from the best level. With `group` (a multiple of the tick),
   * levels merge into buckets: bids round down, asks round up, so a bucket never
   * promises a better price than its orders offer.
   */
  rows(sideName, n, group = null) {
    const side = sideName === 'bids' ? this.bids : this.asks;
    const out = [];
    let total = '0';
    for (const [px, qty] of side.levels) {
      const key = group ? (sideName === 'bids' ? floorToStep(px, group) : ceilToStep(px, group)) : px;
      const last = out[out.length - 1];
      total = add(total, qty);
      if (last && cmp(last.px, key) === 0) {
        last.qty = add(last.qty, qty);
        last.total = total;
      } else {
        if (out.length === n) break;
        out.push({ px: key, qty, total });
      }
    }
    return out;
  }
}
