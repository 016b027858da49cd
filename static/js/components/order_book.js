// OrderBook: bids and asks with depth bars, spread, grouping by tick multiples.
// Book messages only mark the view dirty; one requestAnimationFrame repaints it, so a
// burst of deltas costs one paint. Rows are a fixed pool patched in place, as many a
// side as the column holds (the pool is rebuilt only when the column's height changes).
import { $, h, setText, setClass } from '../lib/dom.js';
import { decimalsOf, mul, ratio, divFloor, add, cmp } from '../lib/decimal.js';
import { percent, price, size } from '../lib/format.js';

export class OrderBook {
  constructor(root, { book, onPick, rows = 16 }) {
    this.root = root;
    // The grouping select and the status sit in the head of the panel around the book.
    const panel = root.closest('.panel') || root;
    this.book = book;
    this.onPick = onPick;
    this.rowCount = rows;
    this.market = null;
    this.group = null;
    this.scheduled = false;
    this.frames = 0; // paints, for the performance test
    this.asksEl = $('.side.asks', root);
    this.bidsEl = $('.side.bids', root);
    this.spreadEl = $('.spread', root);
    this.groupSelect = $('select[name=group]', panel);
    this.status = $('.book-status', panel);
    this.pools = { asks: [], bids: [] };
    this.groupSelect.addEventListener('change', () => {
      this.group = this.groupSelect.value || null;
      this.schedule();
    });
    for (const side of ['asks', 'bids']) {
      const el = side === 'asks' ? this.asksEl : this.bidsEl;
      el.addEventListener('click', (e) => {
        const row = e.target.closest('.row');
        if (row && row.dataset.px) this.onPick(row.dataset.px, side);
      });
      el.addEventListener('keydown', (e) => this.onKey(e));
    }
    this.buildPools();
    if (window.ResizeObserver) new ResizeObserver(() => this.fit()).observe(this.asksEl);
  }

  /** As many rows a side as the asks' half of the column holds (hidden: no change). */
  fit() {
    const height = this.asksEl.clientHeight;
    const row = parseFloat(getComputedStyle(this.root).getPropertyValue('--book-row')) || 20;
    if (!height) return;
    const rows = Math.max(3, Math.floor(height / row));
    if (rows === this.rowCount) return;
    this.rowCount = rows;
    this.buildPools();
    this.paint();
  }

  buildPools() {
    for (const side of ['asks', 'bids']) {
      const el = side === 'asks' ? this.asksEl : this.bidsEl;
      el.replaceChildren();
      this.pools[side] = [];
      for (let i = 0; i < this.rowCount; i++) {
        const row = h(
          'button.row.empty',
          { type: 'button', tabindex: '-1' },
          h('span.bar'),
          // Spaces between the cells: the row's name (its text) reads "price size total".
          h('span.px'),
          ' ',
          h('span.qty'),
          ' ',
          h('span.total'),
        );
        const cells = { row, bar: row.children[0], px: row.children[1], qty: row.children[2], total: row.children[3], text: '' };
        this.pools[side].push(cells);
        el.append(row);
      }
    }
  }

  setMarket(market) {
    this.market = market;
    this.group = null;
    const options = [h('option', { value: '' }, market.tickSize)];
    for (const k of ['10', '100', '1000']) {
      const step = mul(market.tickSize, k);
      options.push(h('option', { value: step }, price(step, market, { step })));
    }
    this.groupSelect.replaceChildren(...options);
    this.setStatus('Loading…');
    this.schedule();
  }

  setStatus(text) {
    setText(this.status, text || '');
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.paint();
    });
  }

  paint() {
    if (!this.market) return;
    this.frames += 1;
    const n = this.rowCount;
    const asks = this.book.rows('asks', n, this.group);
    const bids = this.book.rows('bids', n, this.group);
    const deepest = [asks.at(-1), bids.at(-1)].filter(Boolean).map((r) => r.total);
    const scale = deepest.length ? deepest.reduce((a, b) => (cmp(a, b) >= 0 ? a : b)) : '0';
    // Asks are shown best at the bottom, next to the spread.
    this.fill(this.pools.asks, asks.slice().reverse(), n - asks.length, scale);
    this.fill(this.pools.bids, bids, 0, scale);
    const bid = this.book.bestBid();
    const ask = this.book.bestAsk();
    const [midEl, spreadEl] = this.spreadEl.children;
    if (bid !== null && ask !== null) {
      const spread = this.book.spread();
      const mid = divFloor(add(bid, ask), '2', decimalsOf(this.market.tickSize) + 1);
      setText(midEl, price(mid, this.market, { step: mul(this.market.tickSize, '0.1') }));
      const pct = divFloor(mul(spread, '100'), mid, 4);
      setText(spreadEl, `Spread ${price(spread, this.market)} (${percent(pct, { dp: 3 })})`);
    } else {
      setText(midEl, '—');
      setText(spreadEl, bid === null && ask === null ? 'Empty book' : 'One-sided book');
    }
  }

  fill(pool, rows, offset, scale) {
    for (let i = 0; i < pool.length; i++) {
      const cells = pool[i];
      const r = i >= offset ? rows[i - offset] : undefined;
      if (!r) {
        if (cells.text !== '') {
          cells.text = '';
          setClass(cells.row, 'empty', true);
          delete cells.row.dataset.px;
          cells.row.setAttribute('tabindex', '-1');
        }
        continue;
      }
      const text = `${r.px}|${r.qty}|${r.total}|${scale}`;
      if (cells.text === text) continue;
      cells.text = text;
      setClass(cells.row, 'empty', false);
      cells.row.dataset.px = r.px;
      setText(cells.px, price(r.px, this.market, { step: this.group }));
      setText(cells.qty, size(r.qty, this.market));
      setText(cells.total, size(r.total, this.market));
      cells.bar.style.transform = `scaleX(${ratio(r.total, scale).toFixed(4)})`;
    }
    // One tab stop per side: the best level; arrows move between levels.
    const live = pool.filter((c) => c.text !== '');
    const stop = pool === this.pools.asks ? live.at(-1) : live[0];
    for (const c of live) c.row.setAttribute('tabindex', c === stop ? '0' : '-1');
  }

  onKey(e) {
    const row = e.target.closest('.row');
    if (!row) return;
    const rows = Array.from(this.root.querySelectorAll('.row:not(.empty)'));
    const i = rows.indexOf(row);
    let next = null;
    if (e.key === 'ArrowDown') next = rows[i + 1];
    else if (e.key === 'ArrowUp') next = rows[i - 1];
    else if (e.key === 'Home') next = rows[0];
    else if (e.key === 'End') next = rows.at(-1);
    if (next) {
      e.preventDefault();
      next.focus();
    }
  }
}
