// RecentTrades: the market's prints, newest first, coloured by the taker's side.
import { h, timeOf } from '../lib/dom.js';
import { price, size } from '../lib/format.js';

const KEEP = 60;

export class RecentTrades {
  constructor(root) {
    this.root = root;
    this.list = root;
    this.body = root.querySelector('.trades-body');
    this.ids = new Set();
    this.pending = [];
    this.scheduled = false;
  }

  setMarket(market) {
    this.market = market;
    this.ids.clear();
    this.pending = [];
    this.body.replaceChildren(h('div.row.muted', {}, h('span', { text: 'Loading…' })));
  }

  /** Trades newest first from REST; live ones that arrived meanwhile are kept. */
  load(trades) {
    const live = Array.from(this.body.querySelectorAll('.row[data-id]'));
    this.body.replaceChildren(...live);
    const older = trades.filter((t) => !this.ids.has(String(t.id)));
    for (const t of older) this.body.append(this.row(t));
    this.trim();
    if (!this.body.children.length) this.body.append(h('div.row.muted.placeholder', {}, h('span', { text: 'No trades yet' })));
  }

  add(trade) {
    if (this.ids.has(String(trade.id))) return;
    this.pending.push(trade);
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      const placeholder = this.body.querySelector('.placeholder');
      if (placeholder) placeholder.remove();
      const frag = document.createDocumentFragment();
      for (const t of this.pending.reverse()) if (!this.ids.has(String(t.id))) frag.append(this.row(t));
      this.pending = [];
      this.body.prepend(frag);
      this.trim();
    });
  }

  row(t) {
    this.ids.add(String(t.id));
    const side = t.side === 'BUY' ? 'buy' : 'sell';
    return h(
      'div.row',
      { dataset: { id: String(t.id) } },
      h(`span.${side}`, { text: price(t.px, this.market) }),
      h('span', { text: size(t.qty, this.market) }),
      h('span.t', { text: timeOf(t.ts) }),
    );
  }

  trim() {
    while (this.body.children.length > KEEP) {
      const last = this.body.lastElementChild;
      this.ids.delete(last.dataset.id);
      last.remove();
    }
  }
}
