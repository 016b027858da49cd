// MarketInfoBar: symbol, mark/index/last, 24 h change, volume, open interest, funding
// with its countdown (perps), expiry (futures, options), IV and greeks (options).
import { $, countdown, dateTimeOf, setText, setClass } from '../lib/dom.js';
import { sign } from '../lib/decimal.js';
import { fixed, percent, price, rate, volume } from '../lib/format.js';

export class MarketInfoBar {
  constructor(root) {
    this.root = root;
    this.market = null;
    this.timer = setInterval(() => this.tick(), 1000);
  }

  field(name) {
    return $(`[data-field=${name}]`, this.root);
  }

  show(name, on) {
    const el = this.root.querySelector(`[data-stat=${name}]`);
    if (el) el.hidden = !on;
  }

  setMarket(market) {
    this.market = { ...market };
    setText(this.field('symbol'), market.symbol);
    setText(this.field('kind'), market.kind);
    this.show('mark', market.markPrice !== null || market.kind !== 'SPOT');
    this.show('oi', market.kind !== 'SPOT');
    this.show('funding', market.kind === 'PERP');
    this.show('expiry', market.kind === 'FUTURE' || market.kind === 'OPTION');
    for (const k of ['iv', 'delta', 'gamma', 'vega', 'theta']) this.show(k, market.kind === 'OPTION');
    this.render();
  }

  update(patch) {
    if (!this.market) return;
    Object.assign(this.market, patch);
    this.render();
  }

  render() {
    const m = this.market;
    const px = (v) => price(v, m);
    setText(this.field('last'), px(m.lastPrice));
    setText(this.field('mark'), px(m.markPrice));
    setText(this.field('index'), px(m.indexPrice));
    const ch = this.field('change');
    setText(ch, percent(m.change24h, { plus: true }));
    const s = m.change24h ? sign(m.change24h) : 0;
    setClass(ch, 'up', s > 0);
    setClass(ch, 'down', s < 0);
    setText(this.field('volume'), volume(m.volume24h));
    setText(this.field('oi'), volume(m.openInterest));
    setText(this.field('funding'), rate(m.fundingRate));
    setText(this.field('expiry'), m.expiryTs ? dateTimeOf(m.expiryTs) : '—');
    setText(this.field('iv'), m.markIv ? rate(m.markIv, { dp: 1 }) : '—');
    for (const k of ['delta', 'gamma', 'vega', 'theta']) setText(this.field(k), m[k] ? fixed(m[k], 4) : '—');
    const status = this.field('status');
    status.hidden = !m.status || m.status === 'ACTIVE';
    setText(status, m.status || '');
    this.tick();
  }

  tick() {
    const m = this.market;
    if (!m) return;
    const el = this.field('countdown');
    if (m.kind === 'PERP' && m.nextFundingTs) setText(el, countdown(m.nextFundingTs - Date.now()));
    else setText(el, '');
  }
}
