// AccountInfoPanel: the account summary (GET /account, then `accountUpdate`: equity,
// unrealized PnL, margin ratio with its gauge, available to trade and to withdraw), tabs
// with OpenOrdersList (cancel, cancel all), PositionsList
// (close, PnL in colour, liquidation price), BalancesInfo (REAL: deposit/withdraw;
// PAPER: paperPoints and the faucet) and TradeHistoryList ("Load more" by nextToken).
import { $, h, setText, dateTimeOf } from '../lib/dom.js';
import { del, get, post } from '../lib/api.js';
import { cmp, divFloor, format, isZero, min, mul, sign, sub } from '../lib/decimal.js';
import { amount, money, percent, price, size } from '../lib/format.js';
import { triggerRises } from '../lib/validate.js';
import { DataTable } from './datatable.js';
import { Tabs } from './tabs.js';
import { busy, skeletonNumber } from './loading.js';

export const isOpen = (o) => o.status === 'NEW' || o.status === 'PARTIALLY_FILLED' || o.status === 'UNTRIGGERED';
const HISTORY_PAGE = 20;

function signed(value) {
  const s = value ? sign(value) : 0;
  return h(`span.${s > 0 ? 'up' : s < 0 ? 'down' : 'muted'}`, { text: money(value, { plus: true }) });
}

function actionButton(td, label, className, onClick, aria) {
  let btn = td.firstChild;
  if (!btn || btn.dataset.label !== aria) {
    btn = h(`button.btn.btn-sm.${className}`, { type: 'button', 'aria-label': aria, dataset: { label: aria } }, label);
    btn.addEventListener('click', () => onClick(btn));
  }
  return btn;
}

export class AccountPanel {
  constructor(root, { toaster, onCancelled, marketBySymbol, onChange, onTpsl, onCloseLimit }) {
    this.onTpsl = onTpsl;
    this.onCloseLimit = onCloseLimit;
    // Called whenever the open orders or the positions change (the chart's lines).
    this.onChange = onChange;
    this.root = root;
    this.toaster = toaster;
    this.onCancelled = onCancelled;
    this.marketBySymbol = marketBySymbol;
    this.mode = 'PAPER';
    this.nextToken = null;
    this.tabs = new Tabs($('[role=tablist]', root));
    this.tabs.select('orders');

    this.orders = new DataTable($('[data-table=orders]', root), {
      caption: 'Open orders',
      empty: 'No open orders.',
      columns: [
        { key: 'market', label: 'Market', sortable: true },
        { key: 'side', label: 'Side', sortable: true, className: (o) => (o.side === 'BUY' ? 'buy' : 'sell') },
        { key: 'type', label: 'Type', render: (o) => o.type.replaceAll('_', ' ') },
        { key: 'price', label: 'Price', num: true, sortable: true, render: (o) => price(o.price, o.market) },
        { key: 'triggerPrice', label: 'Trigger', num: true, render: (o) => triggerText(o) },
        { key: 'qty', label: 'Qty', num: true, sortable: true, render: (o) => size(o.qty, o.market) },
        { key: 'filledQty', label: 'Filled', num: true, render: (o) => size(o.filledQty, o.market) },
        { key: 'timeInForce', label: 'TIF' },
        { key: 'createdAt', label: 'Time', sortable: true, render: (o) => dateTimeOf(o.createdAt) },
        {
          key: 'cancel', label: 'Cancel',
          render: (o, td) => actionButton(td, 'Cancel', 'btn-ghost', (b) => this.cancel(o, b), `Cancel order ${o.id}`),
        },
      ],
    });
    this.positions = new DataTable($('[data-table=positions]', root), {
      caption: 'Positions',
      rowKey: (p) => p.market,
      empty: 'No open positions.',
      columns: [
        { key: 'market', label: 'Market', sortable: true },
        {
          key: 'size', label: 'Size', num: true, sortable: true,
          render: (p) => `${p.side} ${size(p.size, p.market)}`,
          className: (p) => (p.side === 'LONG' ? 'buy' : 'sell'),
        },
        { key: 'entryPrice', label: 'Entry', num: true, render: (p) => price(p.entryPrice, p.market) },
        { key: 'markPrice', label: 'Mark', num: true, render: (p) => price(p.markPrice, p.market) },
        { key: 'unrealizedPnl', label: 'Unrealized', num: true, sortable: true, render: (p) => signed(p.unrealizedPnl) },
        { key: 'roe', label: 'ROE', num: true, render: (p) => roe(p) },
        { key: 'realizedPnl', label: 'Realized', num: true, render: (p) => signed(p.realizedPnl) },
        {
          key: 'margin', label: 'Margin', num: true,
          render: (p) => `${money(p.margin)}${p.leverage ? ` (${format(p.leverage)}×)` : ''}`,
        },
        { key: 'liquidationPrice', label: 'Liq. price', num: true, render: (p) => price(p.liquidationPrice, p.market), className: () => 'warn' },
        {
          key: 'tpsl', label: 'TP / SL',
          render: (p, td) => this.tpslCell(p, td),
        },
        {
          key: 'close', label: 'Close at market',
          render: (p, td) => closeButtons(td, p, (fraction, b) => this.close(p, fraction, b)),
        },
        {
          key: 'closeLimit', label: 'Close at limit',
          render: (p, td) => actionButton(td, 'Limit…', 'btn-ghost', (b) => this.onCloseLimit?.(this.positions.rows.find((x) => x.market === p.market) || p, b), `Close ${p.market} position at a limit price`),
        },
      ],
    });
    this.balances = new DataTable($('[data-table=balances]', root), {
      caption: 'Balances',
      rowKey: (b) => `${b.asset}:${b.mode}`,
      empty: 'No balances yet.',
      columns: [
        { key: 'asset', label: 'Asset', sortable: true },
        { key: 'total', label: 'Total', num: true, sortable: true, render: (b) => amount(b.total, b.asset) },
        { key: 'available', label: 'Available', num: true, sortable: true, render: (b) => amount(b.available, b.asset) },
        { key: 'locked', label: 'In orders', num: true, render: (b) => amount(b.locked, b.asset) },
      ],
    });
    this.history = new DataTable($('[data-table=history]', root), {
      caption: 'Trade history',
      empty: 'No trades yet.',
      columns: [
        { key: 'ts', label: 'Time', sortable: true, render: (f) => dateTimeOf(f.ts) },
        { key: 'market', label: 'Market', sortable: true },
        { key: 'side', label: 'Side', className: (f) => (f.side === 'BUY' ? 'buy' : 'sell') },
        { key: 'px', label: 'Price', num: true, render: (f) => price(f.px, f.market) },
        { key: 'qty', label: 'Qty', num: true, render: (f) => size(f.qty, f.market) },
        { key: 'fee', label: 'Fee', num: true, render: (f) => money(f.fee, { dp: 4 }) },
        { key: 'liquidity', label: 'Role' },
      ],
    });
    // The summary sits under the order form, outside this panel.
    this.summary = $('[data-account-summary]');
    this.moreBtn = $('[data-action=load-more]', root);
    this.moreBtn.addEventListener('click', () => this.loadMore());
    $('[data-action=cancel-all]', root).addEventListener('click', (e) => this.cancelAll(e.currentTarget));
  }

  count(name, n) {
    setText($(`[data-count=${name}]`, this.root), String(n));
  }

  async load(mode) {
    this.mode = mode;
    // Until this mode's figures arrive, placeholders: never the other mode's.
    for (const el of this.summary ? this.summary.querySelectorAll('[data-field]:not([data-field=marginGauge])') : []) {
      el.replaceChildren(skeletonNumber());
    }
    for (const t of [this.orders, this.positions, this.balances, this.history]) {
      t.rows = [];
      t.setLoading(true);
    }
    const m = { mode };
    const [orders, positions, balances, fills, account] = await Promise.all([
      get('orders', { ...m, status: 'open' }),
      get('positions', m),
      get('balances', m),
      get('fills', { ...m, limit: HISTORY_PAGE }),
      get('account', m),
    ]);
    if (mode !== this.mode) return null;
    this.accountUpdate(account);
    this.orders.setRows(orders.filter(isOpen));
    this.positions.setRows(positions.filter((p) => p.side !== 'FLAT' && sign(p.size) !== 0));
    this.balances.setRows(balances);
    this.history.setRows(fills.results);
    this.setNext(fills.nextToken);
    this.counts();
    return { orders, positions, balances };
  }

  setNext(token) {
    this.nextToken = token;
    this.moreBtn.hidden = !token;
  }

  counts() {
    this.onChange?.();
    this.positions.render?.();
    this.count('orders', this.orders.rows.length);
    this.count('positions', this.positions.rows.length);
  }

  async loadMore() {
    if (!this.nextToken) return;
    const restore = busy(this.moreBtn, 'Loading…');
    try {
      const page = await get('fills', { mode: this.mode, limit: HISTORY_PAGE, nextToken: this.nextToken });
      this.history.append(page.results);
      restore();
      this.setNext(page.nextToken);
    } catch (err) {
      restore();
      this.toaster.show({ title: 'Could not load more', message: err.message, kind: 'error' });
    }
  }

  orderUpdate(update) {
    if (update.mode !== this.mode) return;
    // On the socket the message's `type` is the event's; the order's own is `orderType`.
    const order = { ...update, type: update.orderType ?? update.type };
    if (isOpen(order)) this.orders.upsert(order);
    else this.orders.remove(order.id);
    this.counts();
  }

  positionUpdate(p) {
    if (p.mode !== this.mode) return;
    if (p.side === 'FLAT' || sign(p.size) === 0) this.positions.remove(p.market);
    else this.positions.upsert(p);
    this.counts();
  }

  /** The account summary: a REST answer or an `accountUpdate`. */
  accountUpdate(a) {
    if (a.mode !== this.mode || !this.summary) return;
    const field = (name) => $(`[data-field=${name}]`, this.summary);
    for (const name of ['equity', 'initialMargin', 'availableToTrade', 'availableToWithdraw']) {
      setText(field(name), money(a[name]));
    }
    field('unrealizedPnl').replaceChildren(signed(a.unrealizedPnl));
    // Past bankruptcy the ratio has no finite value (null): liquidation is due.
    const ratio = a.marginRatio === null ? '1' : min(a.marginRatio, '1');
    setText(field('marginRatio'), a.marginRatio === null ? '≥ 100%' : percent(mul(a.marginRatio, '100')));
    const gauge = field('marginGauge');
    gauge.style.width = `${format(mul(ratio, '100'), { dp: 2, grouping: false })}%`;
    const level = cmp(ratio, '0.8') >= 0 ? 'down' : cmp(ratio, '0.5') >= 0 ? 'warn' : '';
    gauge.className = level;
  }

  balanceUpdate(b) {
    if (b.mode !== this.mode) return;
    this.balances.upsert(b);
  }

  fill(f) {
    if (f.mode !== this.mode) return;
    this.history.upsert(f);
  }

  /** A new mark price: unrealized PnL follows it between position updates. */
  mark(symbol, markPrice) {
    const p = this.positions.rows.find((r) => r.market === symbol);
    if (!p || !markPrice || !p.entryPrice || cmp(p.markPrice || '0', markPrice) === 0) return;
    const diff = sub(markPrice, p.entryPrice);
    const pnl = mul(diff, p.side === 'LONG' ? p.size : `-${p.size}`);
    this.positions.upsert({ ...p, markPrice, unrealizedPnl: pnl });
  }

  async cancel(order, btn) {
    const restore = busy(btn, 'Cancel');
    try {
      const o = await del(`orders/${order.id}`);
      this.onCancelled(o);
    } catch (err) {
      restore();
      this.toaster.show({ title: 'Cancel refused', message: err.message, kind: 'error' });
    }
  }

  async cancelAll(btn) {
    if (!this.orders.rows.length) return;
    const n = this.orders.rows.length;
    if (!armed(btn, `Confirm: cancel ${n} order${n === 1 ? '' : 's'}`)) return;
    const restore = busy(btn);
    try {
      const r = await del('orders', { mode: this.mode });
      this.toaster.show({ title: `Cancelled ${r.canceledIds.length} order${r.canceledIds.length === 1 ? '' : 's'}`, kind: 'info' });
      for (const id of r.canceledIds) this.orders.remove(id);
      this.counts();
    } catch (err) {
      this.toaster.show({ title: 'Cancel all refused', message: err.message, kind: 'error' });
    }
    restore();
  }

  /** The position's take-profit and stop-loss: its attached orders waiting in this mode. */
  tpslOf(position) {
    const found = { takeProfit: null, stopLoss: null };
    for (const o of this.orders.rows) {
      if (o.market !== position.market || !o.attached) continue;
      found[o.attached === 'TP' ? 'takeProfit' : 'stopLoss'] = o;
    }
    return found;
  }

  tpslCell(p, td) {
    const { takeProfit, stopLoss } = this.tpslOf(p);
    const text = `${takeProfit ? price(takeProfit.triggerPrice, p.market) : '—'} / ${stopLoss ? price(stopLoss.triggerPrice, p.market) : '—'}`;
    let wrap = td.firstChild;
    if (!wrap || wrap.dataset.market !== p.market) {
      const edit = h('button.btn.btn-sm.btn-ghost', { type: 'button', 'aria-label': `Set take profit and stop loss of ${p.market}` }, 'Edit');
      edit.addEventListener('click', () => this.onTpsl?.(this.positions.rows.find((x) => x.market === p.market) || p, this.tpslOf(p), edit));
      wrap = h('span.tpsl', { dataset: { market: p.market } }, h('span.num'), ' ', edit);
    }
    setText(wrap.firstChild, text);
    return wrap;
  }

  /** Close `fraction` ('0.25' … '1') of the position at market, and say what closed. */
  async close(position, fraction, btn) {
    const label = btn.textContent;
    if (!armed(btn, fraction === '1' ? 'Confirm close' : `Confirm ${label}`)) return;
    const restore = busy(btn, label);
    try {
      const order = await post(`positions/${encodeURIComponent(position.market)}/close`, { mode: this.mode, fraction });
      this.toaster.show(closeToast(position, order));
    } catch (err) {
      this.toaster.show({ title: 'Close refused', message: err.message, kind: 'error' });
    }
    restore();
  }
}

/** What a close did: all of what it sent, or the part the book took and what stays open. */
export function closeToast(position, order) {
  const { market } = position;
  if (isZero(order.filledQty)) {
    return { title: `${market} not closed`, message: `Nothing filled at market; the position is still ${size(position.size, market)}.`, kind: 'error' };
  }
  const left = sub(position.size, order.filledQty);
  if (cmp(order.filledQty, order.qty) < 0) {
    return {
      title: `${market} closed in part`,
      message: `Closed ${size(order.filledQty, market)} of ${size(order.qty, market)} at market; ${size(left, market)} still open.`,
      kind: 'info',
    };
  }
  return {
    title: `${market} ${isZero(left) ? 'closed' : 'reduced'}`,
    message: isZero(left) ? `Closed ${size(order.filledQty, market)} at market.` : `Closed ${size(order.filledQty, market)} at market; ${size(left, market)} still open.`,
    kind: 'info',
  };
}

/** A conditional order's trigger: "≤ 63,000 mark" while it waits, the price it had once fired. */
function triggerText(o) {
  if (!o.triggerPrice) return '—';
  const rising = triggerRises(o.type, o.side);
  const by = o.triggerBy === 'LAST' ? 'last' : 'mark';
  return `${rising ? '≥' : '≤'} ${price(o.triggerPrice, o.market)} ${by}`;
}

/** Return on equity: the unrealized PnL over the margin the position holds. */
function roe(p) {
  if (!p.margin || cmp(p.margin, '0') <= 0) return h('span.muted', { text: '—' });
  const pct = mul(divFloor(p.unrealizedPnl, p.margin, 6), '100');
  const s = sign(pct);
  return h(`span.${s > 0 ? 'up' : s < 0 ? 'down' : 'muted'}`, { text: percent(pct, { plus: true }) });
}

const CLOSE_PARTS = [['0.25', '25%'], ['0.5', '50%'], ['0.75', '75%'], ['1', '100%']];

/** The close buttons of a position's row: a quarter, half, three quarters, all. */
function closeButtons(td, p, onClick) {
  let group = td.firstChild;
  if (!group || group.dataset.market !== p.market) {
    group = h('div.segmented', { role: 'group', 'aria-label': `Close ${p.market} position at market`, dataset: { market: p.market } });
    for (const [fraction, label] of CLOSE_PARTS) {
      const b = h(`button.btn.btn-sm.${fraction === '1' ? 'btn-danger' : 'btn-ghost'}`, { type: 'button', dataset: { fraction } }, label);
      b.addEventListener('click', () => onClick(fraction, b));
      group.append(b);
    }
  }
  return group;
}

/**
 * Two clicks for what cannot be undone: the first turns the button into a question
 * (`ask`) for a few seconds; true on the second click within them.
 */
function armed(btn, ask, seconds = 4) {
  if (btn.dataset.armed === 'true') {
    clearTimeout(Number(btn.dataset.armTimer));
    delete btn.dataset.armed;
    setText(btn, btn.dataset.armLabel);
    return true;
  }
  btn.dataset.armed = 'true';
  btn.dataset.armLabel = btn.textContent;
  setText(btn, ask);
  btn.dataset.armTimer = String(
    setTimeout(() => {
      delete btn.dataset.armed;
      setText(btn, btn.dataset.armLabel);
    }, seconds * 1000),
  );
  return false;
}
