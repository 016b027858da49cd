// TradingChart: lightweight-charts candles from /api/v1/metrics with a volume
// histogram, an interval switcher, and live updates from trades. The library draws
// with numbers, so prices become numbers here, for drawing only.
import { get } from '../lib/api.js';
import { add, cmp } from '../lib/decimal.js';
import { chartPrice } from '../lib/format.js';

// Candles shown at once when there are more: readable bodies on a desktop's chart.
const VISIBLE_BARS = 150;
const SECONDS = { '1m': 60, '5m': 300, '15m': 900, '1h': 3600, '4h': 14400, '1d': 86400 };
let library = null;

function idle() {
  return new Promise((resolve) => {
    if (window.requestIdleCallback) window.requestIdleCallback(() => resolve(), { timeout: 400 });
    else setTimeout(resolve, 50);
  });
}

const LINE_COLORS = {
  buy: '#35c98f',
  sell: '#ff6b7a',
  trigger: '#f5b84b',
  entry: '#6aaeff',
  liquidation: '#ff9f43',
};

export class TradingChart {
  constructor(root) {
    this.root = root;
    this.box = root.querySelector('.chart-box');
    this.loading = root.querySelector('.chart-loading');
    this.legend = root.querySelector('.chart-legend');
    this.interval = '1m';
    this.market = null;
    this.mode = null;
    this.last = null; // the newest candle, in decimal strings
    // The library (200 kB) is parsed once the first screen is up, not before.
    this.ready = idle().then(() => this.init());
    this.request = 0;
    for (const btn of root.querySelectorAll('[data-interval]')) {
      btn.addEventListener('click', () => this.setInterval(btn.dataset.interval));
    }
  }

  async init() {
    library = library || (await import(this.root.dataset.lib));
    const { createChart, CandlestickSeries, HistogramSeries, ColorType } = library;
    this.chart = createChart(this.box, {
      autoSize: true,
      layout: { background: { type: ColorType.Solid, color: '#121722' }, textColor: '#a4aebf', fontSize: 11 },
      grid: { vertLines: { color: '#1c2433' }, horzLines: { color: '#1c2433' } },
      rightPriceScale: { borderColor: '#2a3447' },
      // Local time, as the rest of the page shows it (the library's default is UTC).
      timeScale: { borderColor: '#2a3447', timeVisible: true, secondsVisible: false, tickMarkFormatter: tickMark },
      localization: {
        timeFormatter: (t) => localTime(t).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }),
        // The axis, the crosshair and the lines' labels show prices as every panel does.
        priceFormatter: (n) => chartPrice(n, this.market),
      },
      crosshair: { mode: 0 },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: '#35c98f', downColor: '#ff6b7a', borderVisible: false,
      wickUpColor: '#35c98f', wickDownColor: '#ff6b7a',
    });
    this.volume = this.chart.addSeries(HistogramSeries, {
      priceScaleId: 'volume', priceFormat: { type: 'volume' }, color: 'rgba(106,174,255,0.35)',
      // Volume has no axis of its own: no label or line of it on the price scale.
      lastValueVisible: false, priceLineVisible: false,
    });
    this.chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
  }

  setInterval(interval) {
    this.interval = interval;
    for (const btn of this.root.querySelectorAll('[data-interval]')) {
      btn.setAttribute('aria-pressed', String(btn.dataset.interval === interval));
    }
    this.load();
  }

  setMarket(market, mode) {
    this.market = market;
    this.mode = mode;
    this.precision = market.tickSize;
    this.load();
  }

  async load() {
    const request = ++this.request;
    this.loading.hidden = false;
    await this.ready;
    const step = this.tickDecimals();
    this.candles.applyOptions({ priceFormat: { type: 'price', precision: step, minMove: Number(this.market.tickSize) } });
    let rows = [];
    try {
      rows = await get('metrics', { market: this.market.symbol, mode: this.mode, interval: this.interval });
    } catch {
      rows = [];
    }
    if (request !== this.request) return;
    this.candles.setData(rows.map((c) => this.bar(c)));
    this.volume.setData(rows.map((c) => this.vol(c)));
    this.last = rows.length ? { ...rows[rows.length - 1] } : null;
    this.loading.hidden = true;
    this.legend.textContent = `${this.market.symbol} · ${this.interval}${rows.length ? '' : ' · no trades yet'}`;
    this.fit(rows.length);
  }

  /** The chart fits its content: every candle where there are few, else the latest
   * VISIBLE_BARS of them, with room for the next few on the right. */
  fit(count) {
    const scale = this.chart.timeScale();
    if (count <= VISIBLE_BARS) scale.fitContent();
    else scale.setVisibleLogicalRange({ from: count - VISIBLE_BARS, to: count + 4 });
  }

  tickDecimals() {
    const t = this.market.tickSize;
    const i = t.indexOf('.');
    return i < 0 ? 0 : t.length - i - 1;
  }

  bar(c) {
    return { time: c.ts / 1000, open: Number(c.open), high: Number(c.high), low: Number(c.low), close: Number(c.close) };
  }

  vol(c) {
    const up = cmp(c.close, c.open) >= 0;
    return { time: c.ts / 1000, value: Number(c.volume), color: up ? 'rgba(53,201,143,0.35)' : 'rgba(255,107,122,0.35)' };
  }

  /**
   * Horizontal lines at prices of the trader's own: open orders, triggers, the
   * position's entry and liquidation price. `lines`: [{key, price, title, kind}], kind
   * one of buy, sell, trigger, entry, liquidation. Lines are patched by key.
   */
  setLines(lines) {
    this.wantedLines = lines;
    this.ready.then(() => this.applyLines());
  }

  applyLines() {
    if (!this.candles) return;
    this.priceLines = this.priceLines || new Map();
    const wanted = new Map((this.wantedLines || []).map((l) => [l.key, l]));
    for (const [key, drawn] of this.priceLines) {
      const want = wanted.get(key);
      if (!want || want.price !== drawn.spec.price || want.title !== drawn.spec.title) {
        this.candles.removePriceLine(drawn.line);
        this.priceLines.delete(key);
      }
    }
    for (const [key, spec] of wanted) {
      if (this.priceLines.has(key)) continue;
      const line = this.candles.createPriceLine({
        price: Number(spec.price),
        color: LINE_COLORS[spec.kind] || '#a4aebf',
        lineWidth: 1,
        lineStyle: spec.kind === 'entry' ? 0 : 2,
        axisLabelVisible: true,
        title: spec.title,
      });
      this.priceLines.set(key, { line, spec });
    }
  }

  /** A live trade: extend the newest candle or open the next one. */
  addTrade(trade) {
    if (!this.candles || !this.market) return;
    const step = SECONDS[this.interval] * 1000;
    const bucket = trade.ts - (trade.ts % step);
    let c = this.last;
    if (c && bucket < c.ts) return; // older than what is drawn
    if (!c || bucket > c.ts) {
      c = { ts: bucket, open: trade.px, high: trade.px, low: trade.px, close: trade.px, volume: '0' };
    }
    if (cmp(trade.px, c.high) > 0) c.high = trade.px;
    if (cmp(trade.px, c.low) < 0) c.low = trade.px;
    c.close = trade.px;
    c.volume = add(c.volume, trade.qty);
    this.last = c;
    this.candles.update(this.bar(c));
    this.volume.update(this.vol(c));
    if (this.legend.textContent.endsWith('no trades yet')) this.legend.textContent = `${this.market.symbol} · ${this.interval}`;
  }
}

function localTime(t) {
  return new Date(Number(t) * 1000);
}

/** Axis labels in local time: year, month, day, or time of day (the library's tick mark types 0-4). */
function tickMark(t, type) {
  const d = localTime(t);
  if (type === 0) return String(d.getFullYear());
  if (type === 1) return d.toLocaleDateString([], { month: 'short' });
  if (type === 2) return d.toLocaleDateString([], { day: 'numeric', month: 'short' });
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
}
