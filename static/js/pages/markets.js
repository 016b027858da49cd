// Market list with live tickers: one socket, one channel per market.
import { $, readJson, setText, setClass } from '../lib/dom.js';
import { cmp, sign } from '../lib/decimal.js';
import { percent, price, rate, volume } from '../lib/format.js';
import { ExchangeSocket } from '../lib/ws.js';
import { ConnectionStatus } from '../components/connection_status.js';

const config = readJson('dex-config');
const markets = new Map(config.markets.map((m) => [m.symbol, { ...m }]));
const channelOf = (symbol) => (config.mode === 'REAL' ? `market.${symbol}` : `market.${symbol}.paper`);
const symbolOf = new Map(config.markets.map((m) => [channelOf(m.symbol), m.symbol]));

function render(symbol, previousLast = null) {
  const m = markets.get(symbol);
  const row = $(`tr[data-symbol="${symbol}"]`);
  if (!row) return;
  const cell = (f) => row.querySelector(`[data-field=${f}]`);
  const last = cell('lastPrice');
  setText(last, price(m.lastPrice, m));
  if (previousLast && m.lastPrice && cmp(previousLast, m.lastPrice) !== 0) {
    const up = cmp(m.lastPrice, previousLast) > 0;
    last.classList.remove('flash-up', 'flash-down');
    void last.offsetWidth;
    last.classList.add(up ? 'flash-up' : 'flash-down');
  }
  const ch = cell('change24h');
  setText(ch, percent(m.change24h, { plus: true }));
  setClass(ch, 'up', m.change24h ? sign(m.change24h) > 0 : false);
  setClass(ch, 'down', m.change24h ? sign(m.change24h) < 0 : false);
  setText(cell('volume24h'), volume(m.volume24h));
  setText(cell('markPrice'), price(m.markPrice, m));
  setText(cell('openInterest'), volume(m.openInterest));
  setText(cell('fundingRate'), rate(m.fundingRate));
  setText(cell('status'), m.status);
}

for (const symbol of markets.keys()) render(symbol);

const status = new ConnectionStatus($('#conn-status'));
const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const socket = new ExchangeSocket(`${scheme}://${location.host}/ws/`);
socket.addEventListener('status', (e) => status.set(e.detail.status, e.detail));
socket.addEventListener('message', ({ detail: msg }) => {
  const symbol = symbolOf.get(msg.channel);
  if (!symbol) return;
  const m = markets.get(symbol);
  const before = m.lastPrice;
  if (msg.type === 'ticker') {
    for (const k of ['markPrice', 'indexPrice', 'lastPrice', 'change24h', 'volume24h', 'openInterest']) {
      if (k in msg) m[k] = msg[k];
    }
  } else if (msg.type === 'trade') {
    m.lastPrice = msg.px;
  } else if (msg.type === 'funding') {
    m.fundingRate = msg.rate;
  } else if (msg.type === 'marketState') {
    m.status = msg.status;
  } else {
    return;
  }
  render(symbol, before);
});
for (const symbol of markets.keys()) socket.subscribe(channelOf(symbol));
socket.connect();
window.dex = { socket, markets };
