// OrderEntryPanel: limit/market, buy/sell, price and qty checked against the tick and
// lot grids, percentage-of-available buttons, leverage, reduce-only, time in force, a
// cost/margin preview, and the API's refusals shown on the field they concern.
import { $, $$, setText } from '../lib/dom.js';
import { post } from '../lib/api.js';
import { add, cmp, decimalsOf, divFloor, floorToStep, format, isValid, mul, sign } from '../lib/decimal.js';
import { errorForForm, readNumber, validateOrder, triggerRises } from '../lib/validate.js';
import { amount, money, size } from '../lib/format.js';
import { busy, skeletonNumber } from './loading.js';

const FIELDS = ['price', 'qty', 'leverage', 'reduceOnly', 'timeInForce', 'triggerPrice', 'callbackRate', 'takeProfit', 'stopLoss'];
// A trailing stop's callbackRate, in percent, as the API takes it.
const CALLBACK_MIN = 0.1;
const CALLBACK_MAX = 10;
const CHECK_AFTER_MS = 500;

export class OrderEntry extends EventTarget {
  constructor(root, { onPlaced, onRejected, bestPrices }) {
    super();
    this.root = root;
    this.form = $('form', root);
    this.onPlaced = onPlaced;
    this.onRejected = onRejected;
    this.bestPrices = bestPrices;
    this.side = 'BUY';
    this.type = 'LIMIT';
    this.market = null;
    this.mode = 'PAPER';
    this.balances = [];
    this.leverage = null;
    if (!this.form) return; // logged out: the panel shows a call to log in
    this.price = this.form.elements.price;
    this.qty = this.form.elements.qty;
    this.tif = this.form.elements.timeInForce;
    // The time in force chosen for each type: a market order's (IOC or FOK) never
    // carries over to a limit order, which goes back to what it had (GTC at first).
    this.tifByType = { LIMIT: 'GTC', MARKET: 'IOC', STOP: 'IOC' };
    this.trigger = this.form.elements.triggerPrice;
    this.stopKind = this.form.elements.stopKind;
    this.triggerBy = this.form.elements.triggerBy;
    this.callback = this.form.elements.callbackRate;
    this.withTpsl = this.form.elements.withTpsl;
    this.takeProfit = this.form.elements.takeProfit;
    this.stopLoss = this.form.elements.stopLoss;
    this.withTpsl.addEventListener('change', () => this.setType(this.type));
    for (const el of [this.takeProfit, this.stopLoss]) el.addEventListener('input', () => this.clearError(el.name));
    for (const el of [this.stopKind, this.triggerBy, this.trigger, this.callback]) {
      el.addEventListener('input', () => {
        this.clearError('triggerPrice');
        this.clearError('callbackRate');
        if (el === this.stopKind) this.setType('STOP');
        this.triggerHint();
      });
    }
    this.tif.addEventListener('change', () => {
      this.tifByType[this.type] = this.tif.value;
    });
    this.reduceOnly = this.form.elements.reduceOnly;
    this.leverageInput = this.form.elements.leverage;
    this.submitBtn = $('button[type=submit]', this.form);
    for (const b of $$('[data-side]', root)) b.addEventListener('click', () => this.setSide(b.dataset.side));
    for (const b of $$('[data-type]', root)) b.addEventListener('click', () => this.setType(b.dataset.type));
    for (const b of $$('[data-pct]', root)) b.addEventListener('click', () => this.fillPercent(b.dataset.pct));
    for (const el of [this.price, this.qty, this.tif, this.reduceOnly]) {
      el.addEventListener('input', () => {
        this.clearError(el.name);
        this.clearError('form');
        this.preview();
      });
    }
    // Numbers are checked as they are typed (once the typing pauses, so that "0." on
    // the way to "0.05" is not refused), and written out plainly when the field is left.
    this.checkTimers = {};
    for (const el of [this.price, this.qty, this.trigger, this.callback, this.takeProfit, this.stopLoss]) {
      el.addEventListener('input', () => {
        clearTimeout(this.checkTimers[el.name]);
        this.checkTimers[el.name] = setTimeout(() => this.checkField(el.name), CHECK_AFTER_MS);
      });
      el.addEventListener('blur', () => {
        clearTimeout(this.checkTimers[el.name]);
        const { value, error } = readNumber(el.value);
        if (!error && value !== el.value.trim()) el.value = value;
        this.checkField(el.name);
      });
    }
    this.leverageInput.addEventListener('input', () => {
      setText($('output[name=leverageOut]', root), `${this.leverageInput.value}×`);
      this.preview();
    });
    // Arrow keys move the slider a step at a time, each a `change`: the choice is sent
    // once it has settled, and only the answer to the last one sent counts.
    this.leverageTimer = null;
    this.leverageSent = 0;
    this.leverageInput.addEventListener('change', () => {
      clearTimeout(this.leverageTimer);
      this.leverageTimer = setTimeout(() => this.saveLeverage(), 400);
    });
    this.fundHint = $('[data-fund-hint]', root);
    // Nothing to trade with: the way to funds of this mode (the page opens it).
    $('[data-action=fund]', root).addEventListener('click', (e) =>
      this.dispatchEvent(new CustomEvent('fund', { detail: { mode: this.mode, opener: e.currentTarget } })),
    );
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
  }

  setMarket(market, mode) {
    if (mode !== this.mode || !this.market) {
      // Another mode's balances are not this one's: nothing is said of the funds until
      // this mode's arrive (no "0.00, no funds" for a funded account meanwhile).
      this.balances = [];
      this.balancesKnown = false;
    }
    this.market = market;
    this.mode = mode;
    if (!this.form) return;
    this.derivative = market.kind !== 'SPOT';
    for (const el of $$('[data-derivative]', this.root)) el.hidden = !this.derivative;
    // Spot buys and sells; derivatives go long and short.
    for (const b of $$('[data-side]', this.root)) {
      const buy = b.dataset.side === 'BUY';
      setText(b, this.derivative ? (buy ? 'Buy / Long' : 'Sell / Short') : buy ? 'Buy' : 'Sell');
    }
    clearTimeout(this.leverageTimer);
    this.price.step = market.tickSize;
    this.qty.step = market.lotSize;
    setText($('[data-suffix=price]', this.root), market.quote);
    setText($('[data-suffix=qty]', this.root), market.base);
    this.price.value = '';
    this.qty.value = '';
    this.reduceOnly.checked = false;
    // A take-profit and a stop-loss are prices of one market: not carried to another.
    this.takeProfit.value = '';
    this.stopLoss.value = '';
    this.setType(this.type);
    const max = Number(market.maxLeverage || 1);
    this.leverageInput.max = String(max);
    this.setLeverage(null);
    for (const f of [...FIELDS, 'form']) this.clearError(f);
    this.updateSubmitLabel();
    this.preview();
  }

  setLeverage(value) {
    if (!this.form || !this.market) return;
    const max = Number(this.market.maxLeverage || 1);
    // Without a position the server's default applies: 10, or the maximum if lower.
    const lev = value !== null && value !== undefined ? Number(value) : Math.min(10, max);
    this.leverage = String(Math.round(lev));
    this.leverageInput.value = this.leverage;
    setText($('output[name=leverageOut]', this.root), `${this.leverage}×`);
    this.preview();
  }

  setBalances(balances) {
    const before = this.balancesKnown ? this.available(this.market?.quote) : null;
    this.balances = balances;
    this.balancesKnown = true;
    // A refusal for want of funds no longer holds once more funds arrive.
    if (this.fundsRefused && (before === null || cmp(this.available(this.market?.quote), before) > 0)) {
      this.fundsRefused = false;
      this.clearError('qty');
      this.clearError('form');
    }
    this.preview();
  }

  setSide(side) {
    this.side = side;
    for (const b of $$('[data-side]', this.root)) b.setAttribute('aria-pressed', String(b.dataset.side === side));
    if (this.submitBtn) {
      this.submitBtn.className = `btn btn-block ${side === 'BUY' ? 'btn-buy' : 'btn-sell'}`;
      this.updateSubmitLabel();
    }
    this.preview();
  }

  setType(type) {
    this.type = type;
    for (const b of $$('[data-type]', this.root)) b.setAttribute('aria-pressed', String(b.dataset.type === type));
    if (!this.form) return;
    const trades = this.tradesAs();
    $('[data-field-wrap=price]', this.root).hidden = trades === 'MARKET';
    $('[data-field-wrap=trigger]', this.root).hidden = type !== 'STOP';
    $('[data-trigger-price-wrap]', this.root).hidden = this.trailing();
    $('[data-callback-wrap]', this.root).hidden = !this.trailing();
    // TP/SL attach to the position an order opens: a limit or market order on a perp or a future.
    const tpslToggle = $('[data-tpsl-toggle]', this.root);
    tpslToggle.hidden = type === 'STOP' || !this.attachable();
    $('[data-field-wrap=tpsl]', this.root).hidden = tpslToggle.hidden || !this.withTpsl.checked;
    const options = trades === 'MARKET' ? ['IOC', 'FOK'] : ['GTC', 'POST_ONLY', 'IOC', 'FOK'];
    for (const o of this.tif.options) o.hidden = !options.includes(o.value);
    const chosen = this.tifByType[type];
    this.tif.value = options.includes(chosen) ? chosen : options[0];
    this.clearError('price');
    this.updateSubmitLabel();
    this.preview();
  }

  /** A number field's value as the API wants it ("70,000" → "70000", "1e5" → "100000"). */
  num(input) {
    return readNumber(input.value).value;
  }

  /** The checks of the order form for one field, as it is typed: its own message, or
   * none. An empty field is not refused until the order is sent. */
  checkField(name) {
    const input = this.form.elements[name];
    if (!input || !this.market) return;
    const { value, error } = readNumber(input.value);
    if (value === '') return this.clearError(name);
    if (error) return this.showError(name, error);
    const errors = this.check().errors;
    if (errors[name] && errors[name].code !== 'MISSING_FIELD') this.showError(name, errors[name].message);
    else this.clearError(name);
  }

  /** A trailing stop: its trigger follows the price at callbackRate %. */
  trailing() {
    return this.type === 'STOP' && this.stopKind.value === 'TRAILING_STOP_MARKET';
  }

  /** Whether the market's orders take a take-profit and a stop-loss. */
  attachable() {
    return !!this.market && (this.market.kind === 'PERP' || this.market.kind === 'FUTURE');
  }

  /** How the order trades: MARKET or LIMIT (a stop: once its trigger is crossed). */
  tradesAs() {
    if (this.type !== 'STOP') return this.type;
    return this.stopKind.value.endsWith('_LIMIT') ? 'LIMIT' : 'MARKET';
  }

  /** The rule of the trigger, in words: when it fires. */
  triggerHint() {
    const hint = $('[data-trigger-hint]', this.root);
    if (!hint || this.type !== 'STOP') return;
    const rising = triggerRises(this.stopKind.value, this.side);
    const px = this.trigger.value.trim() || '…';
    const watched = this.triggerBy.value === 'LAST' ? 'the last trade' : 'the mark price';
    if (this.trailing()) {
      const pct = this.callback.value.trim() || '…';
      const best = rising ? 'lowest' : 'highest';
      setText(hint, `Sent when ${watched} ${rising ? 'rises' : 'falls'} ${pct}% from its ${best} since the order was placed.`);
      return;
    }
    setText(hint, `Sent when ${watched} ${rising ? 'rises to' : 'falls to'} ${px} or ${rising ? 'above' : 'below'}.`);
  }

  updateSubmitLabel() {
    if (!this.market) return;
    const how = { MARKET: ' at market', STOP: ' on trigger' }[this.type] || '';
    setText(this.submitBtn, `${this.side === 'BUY' ? 'Buy' : 'Sell'} ${this.market.base}${how}`);
    this.triggerHint();
  }

  /** A price from the order book. */
  setPrice(px) {
    if (!this.form) return;
    if (this.type !== 'LIMIT') this.setType('LIMIT');
    this.price.value = px;
    this.clearError('price');
    this.preview();
    this.price.focus();
  }

  available(asset) {
    const b = this.balances.find((x) => x.asset === asset && x.mode === this.mode);
    return b ? b.available : '0';
  }

  refPrice() {
    if (this.trailing()) return this.market.markPrice || this.market.lastPrice || null;
    if (this.type === 'STOP' && this.tradesAs() === 'MARKET') {
      // A stop market is valued at its trigger, where it will trade.
      const t = this.num(this.trigger);
      return isValid(t) && sign(t) > 0 ? t : null;
    }
    const px = this.num(this.price);
    if (this.tradesAs() === 'LIMIT' && px !== '') {
      // What was typed, or nothing: a preview never prices an order at a price it won't have.
      return isValid(px) && sign(px) > 0 ? px : null;
    }
    const { bestBid, bestAsk } = this.bestPrices();
    return (this.side === 'BUY' ? bestAsk : bestBid) || this.market.markPrice || this.market.lastPrice || null;
  }

  fillPercent(pct) {
    const m = this.market;
    const price = this.refPrice();
    let qty = '0';
    if (!this.derivative && this.side === 'SELL') {
      qty = divFloor(mul(this.available(m.base), pct), '100', 18);
    } else if (price && sign(price) > 0) {
      const quote = divFloor(mul(this.available(m.quote), pct), '100', 18);
      const fee = m.takerFee || '0';
      if (this.derivative) {
        // notional / leverage + notional * fee <= available  →  notional <= avail / (1/lev + fee)
        const perNotional = add(divFloor('1', this.leverage, 18), fee);
        qty = divFloor(divFloor(quote, perNotional, 18), price, 18);
      } else {
        qty = divFloor(quote, mul(price, add('1', fee)), 18);
      }
    }
    qty = floorToStep(qty, m.lotSize);
    this.qty.value = sign(qty) > 0 ? format(qty, { grouping: false, dp: decimalsOf(m.lotSize) }) : '';
    this.clearError('qty');
    this.preview();
  }

  preview() {
    if (!this.form || !this.market) return;
    const m = this.market;
    const price = this.refPrice();
    const qty = this.num(this.qty);
    const out = (name, text) => setText($(`[data-preview=${name}]`, this.root), text);
    const availEl = $('[data-preview=available]', this.root);
    const avail = !this.derivative && this.side === 'SELL' ? this.available(m.base) : this.available(m.quote);
    setText($('[data-preview-label=cost]', this.root), this.derivative ? 'Margin required' : this.side === 'BUY' ? 'Cost' : 'You sell');
    const quoteFunds = this.available(m.quote);
    const broke = this.balancesKnown && sign(quoteFunds) <= 0 && sign(this.available(m.base)) <= 0;
    this.fundHint.hidden = !broke;
    if (!this.balancesKnown) {
      if (!availEl.querySelector('.skeleton')) availEl.replaceChildren(skeletonNumber());
    }
    setText($('[data-action=fund]', this.root), this.mode === 'REAL' ? 'Deposit' : 'Get paper funds');
    const availAsset = !this.derivative && this.side === 'SELL' ? m.base : m.quote;
    if (this.balancesKnown) out('available', `${amount(avail, availAsset)} ${availAsset}`);
    if (!price || !isValid(qty) || sign(qty) <= 0 || !isValid(price)) {
      out('notional', '—');
      out('cost', '—');
      out('fee', '—');
      return;
    }
    const notional = mul(price, qty);
    const fee = mul(notional, m.takerFee || '0');
    out('notional', `${money(notional)} ${m.quote}`);
    out('fee', `${money(fee, { dp: 4 })} ${m.quote}`);
    if (this.derivative) {
      const margin = add(divFloor(notional, this.leverage || '1', 8), fee);
      out('cost', `${money(margin)} ${m.quote}`);
    } else {
      out('cost', this.side === 'BUY' ? `${money(add(notional, fee), { dp: 4 })} ${m.quote}` : `${size(qty, m)} ${m.base}`);
    }
  }

  showError(field, message) {
    if (field === 'form') {
      setText($('.form-error', this.root), message);
      return;
    }
    const el = $(`[data-error-for=${field}]`, this.root);
    if (el) setText(el, message);
    const input = this.form.elements[field];
    if (input && input.setAttribute) input.setAttribute('aria-invalid', 'true');
  }

  clearError(field) {
    if (!this.form) return;
    if (field === 'form') {
      setText($('.form-error', this.root), '');
      return;
    }
    const el = $(`[data-error-for=${field}]`, this.root);
    if (el) setText(el, '');
    const input = this.form.elements[field];
    if (input && input.removeAttribute) input.removeAttribute('aria-invalid');
  }

  async saveLeverage() {
    const value = this.leverageInput.value;
    if (value === this.leverage) return;
    this.clearError('leverage');
    const sent = ++this.leverageSent;
    const market = this.market.symbol;
    try {
      const r = await post(`markets/${encodeURIComponent(market)}/leverage`, { mode: this.mode, leverage: value });
      if (sent !== this.leverageSent || market !== this.market.symbol) return; // a later choice is on its way
      this.leverage = String(Number(r.leverage));
      this.dispatchEvent(new CustomEvent('leverage', { detail: r }));
    } catch (err) {
      if (sent !== this.leverageSent || market !== this.market.symbol) return;
      this.showError('leverage', errorForForm(err).message);
      this.setLeverage(this.leverage);
    }
    this.preview();
  }

  /** The whole form checked as the API would: {ok, errors, form}. */
  check() {
    const { bestBid, bestAsk } = this.bestPrices();
    const trades = this.tradesAs();
    const form = {
      type: trades,
      side: this.side,
      price: trades === 'LIMIT' ? this.num(this.price) : undefined,
      qty: this.num(this.qty),
      timeInForce: this.tif.value,
    };
    // A stop's limit is judged at its trigger, not against today's book.
    const check = validateOrder(form, this.market, this.type === 'STOP' ? {} : { bestBid, bestAsk });
    if (this.trailing()) {
      const rate = Number(this.num(this.callback));
      if (this.num(this.callback) === '' || !(rate >= CALLBACK_MIN && rate <= CALLBACK_MAX)) {
        check.ok = false;
        check.errors.callbackRate = {
          code: this.num(this.callback) === '' ? 'MISSING_FIELD' : 'INVALID_CALLBACK_RATE',
          message: `Trail by ${CALLBACK_MIN} to ${CALLBACK_MAX} %`,
        };
      }
    } else if (this.type === 'STOP') {
      const trigger = validateOrder({ ...form, type: 'LIMIT', price: this.num(this.trigger) }, this.market, {});
      if (trigger.errors.price) {
        check.ok = false;
        const message = trigger.errors.price.message.replace('Enter a price', 'Enter a trigger price').replace(/^Price/, 'Trigger price');
        check.errors.triggerPrice = { ...trigger.errors.price, message };
      }
    }
    for (const input of [this.price, this.qty, this.trigger, this.callback, this.takeProfit, this.stopLoss]) {
      const { error } = readNumber(input.value);
      if (error && !input.closest('[hidden]')) {
        check.ok = false;
        check.errors[input.name] = { code: 'INVALID_NUMBER', message: error };
      }
    }
    return { ...check, form };
  }

  async submit() {
    for (const f of [...FIELDS, 'form']) this.clearError(f);
    const check = this.check();
    const trades = this.tradesAs();
    const form = check.form;
    if (!check.ok) {
      for (const [field, e] of Object.entries(check.errors)) this.showError(field, e.message);
      const first = Object.keys(check.errors).find((f) => this.form.elements[f]);
      if (first) this.form.elements[first].focus();
      return;
    }
    const body = {
      market: this.market.symbol,
      mode: this.mode,
      side: this.side,
      type: this.type === 'STOP' ? this.stopKind.value : this.type,
      qty: form.qty,
      timeInForce: form.timeInForce,
      reduceOnly: this.derivative ? this.reduceOnly.checked : false,
      clientOrderId: `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
    };
    if (trades === 'LIMIT') body.price = form.price;
    if (this.trailing()) {
      body.callbackRate = this.num(this.callback);
      body.triggerBy = this.triggerBy.value;
    } else if (this.type === 'STOP') {
      body.triggerPrice = this.num(this.trigger);
      body.triggerBy = this.triggerBy.value;
    }
    if (!$('[data-field-wrap=tpsl]', this.root).hidden) {
      if (this.num(this.takeProfit) !== '') body.takeProfit = this.num(this.takeProfit);
      if (this.num(this.stopLoss) !== '') body.stopLoss = this.num(this.stopLoss);
    }
    const restore = busy(this.submitBtn, 'Placing…');
    try {
      const order = await post('trade', body);
      restore();
      this.onPlaced(order);
    } catch (err) {
      restore();
      // Said once, where it belongs: on the field it names (focused), else above the form.
      const e = errorForForm(err);
      this.fundsRefused = e.code === 'INSUFFICIENT_MARGIN' || e.code === 'INSUFFICIENT_BALANCE';
      this.showError(e.field, e.message);
      this.form.elements[e.field]?.focus?.();
      this.onRejected(err, body);
    }
  }
}
