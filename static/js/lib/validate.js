// Order-form checks, the same the API makes, so that most mistakes show before a
// round trip. Codes are the API's (docs/api.md); the server still has the last word.

import { cmp, isMultipleOf, mul, parse, sign, toString } from './decimal.js';
import { money } from './format.js';

const GROUPED = /^\d{1,3}([, ]\d{3})+(\.\d*)?$/;
const SCIENTIFIC = /^(\d+\.?\d*|\.\d+)[eE]([+-]?\d{1,3})$/;
export const DECIMAL_COMMA = 'Use a point for decimals (0.5); a comma only between thousands (70,000).';

/**
 * A number as people type it, as the API wants it: thousands separators dropped
 * ("70,000" → "70000") and an exponent written out ("1e5" → "100000"). A comma that
 * cannot separate thousands ("0,5") is explained instead. Returns {value, error}; what
 * is not a number at all is returned as typed, for the field's own check to refuse.
 */
export function readNumber(text) {
  const t = String(text ?? '').trim();
  if (GROUPED.test(t)) return { value: t.replace(/[, ]/g, ''), error: null };
  const sci = SCIENTIFIC.exec(t);
  if (sci) {
    const m = parse(sci[1]);
    const scale = m.s - Number(sci[2]);
    const n = scale >= 0 ? m.n : m.n * 10n ** BigInt(-scale);
    return { value: toString({ n, s: Math.max(scale, 0) }), error: null };
  }
  if (t.includes(',')) return { value: t, error: DECIMAL_COMMA };
  return { value: t, error: null };
}

const POSITIVE = /^\d*\.?\d*$/;

function positiveDecimal(text) {
  if (text === undefined || text === null || String(text).trim() === '') return 'missing';
  const t = String(text).trim();
  if (!POSITIVE.test(t) || parse(t) === null) return 'invalid';
  if (sign(t) <= 0) return 'invalid';
  return null;
}

/**
 * Check an order against its market. `form`: {type, side, price, qty, timeInForce};
 * `market`: {tickSize, lotSize, minNotional, status}; `ref`: {bestBid, bestAsk} for the
 * notional of a market order. Returns {ok, errors} with errors keyed by field name
 * ("price", "qty", "timeInForce", "form"), each {code, message}.
 */
export function validateOrder(form, market, ref = {}) {
  const errors = {};
  const type = form.type === 'MARKET' ? 'MARKET' : 'LIMIT';
  const qty = form.qty === undefined || form.qty === null ? '' : String(form.qty).trim();
  const price = form.price === undefined || form.price === null ? '' : String(form.price).trim();

  if (market.status && market.status !== 'ACTIVE') {
    const code = { PAUSED: 'MARKET_PAUSED', DELISTED: 'MARKET_DELISTED', SETTLED: 'MARKET_SETTLED' }[
      market.status
    ];
    errors.form = { code: code || 'MARKET_CLOSED', message: `${market.symbol || 'This market'} is ${market.status.toLowerCase()}: no new orders.` };
  }

  const qtyProblem = positiveDecimal(qty);
  if (qtyProblem === 'missing') {
    errors.qty = { code: 'MISSING_FIELD', message: 'Enter a quantity.' };
  } else if (qtyProblem) {
    errors.qty = { code: 'INVALID_QTY', message: 'Quantity must be a positive number.' };
  } else if (!isMultipleOf(qty, market.lotSize)) {
    errors.qty = { code: 'INVALID_QTY', message: `Quantity must be a multiple of ${market.lotSize}.` };
  }

  if (type === 'LIMIT') {
    const priceProblem = positiveDecimal(price);
    if (priceProblem === 'missing') {
      errors.price = { code: 'INVALID_PRICE', message: 'Enter a price.' };
    } else if (priceProblem) {
      errors.price = { code: 'INVALID_PRICE', message: 'Price must be a positive number.' };
    } else if (!isMultipleOf(price, market.tickSize)) {
      errors.price = { code: 'INVALID_PRICE', message: `Price must be a multiple of ${market.tickSize}.` };
    }
  } else if (form.timeInForce === 'POST_ONLY' || form.timeInForce === 'GTC') {
    errors.timeInForce = { code: 'INVALID_TIME_IN_FORCE', message: 'A market order is IOC or FOK.' };
  }

  if (!errors.qty && !errors.price && market.minNotional) {
    const reference =
      type === 'LIMIT' ? price : form.side === 'BUY' ? ref.bestAsk : ref.bestBid;
    if (reference) {
      const notional = mul(reference, qty);
      if (cmp(notional, market.minNotional) < 0) {
        errors.qty = {
          code: 'MIN_NOTIONAL',
          message: `Order value ${money(notional)} is below the minimum of ${money(market.minNotional)}.`,
        };
      }
    }
  }
  return { ok: Object.keys(errors).length === 0, errors };
}

const FIELD_OF_CODE = {
  INVALID_PRICE: 'price',
  INVALID_QTY: 'qty',
  MIN_NOTIONAL: 'qty',
  INSUFFICIENT_MARGIN: 'qty',
  INSUFFICIENT_BALANCE: 'qty',
  WOULD_CROSS: 'price',
  FOK_UNFILLABLE: 'qty',
  REDUCE_ONLY_REJECTED: 'reduceOnly',
  INVALID_LEVERAGE: 'leverage',
  INVALID_TIME_IN_FORCE: 'timeInForce',
  INVALID_TRIGGER_PRICE: 'triggerPrice',
};

const FRIENDLY = {
  INSUFFICIENT_MARGIN: 'Not enough free margin for this order. Lower the size or raise leverage.',
  INSUFFICIENT_BALANCE: 'Not enough available balance for this order.',
  WOULD_CROSS: 'A post-only order at this price would trade at once. Move the price away from the spread.',
  FOK_UNFILLABLE: 'Fill-or-kill: the book cannot fill the whole quantity now. Nothing was traded.',
  REDUCE_ONLY_REJECTED: 'Reduce-only: this order would not reduce your position.',
  MARKET_PAUSED: 'The market is paused: no new orders (cancels still work).',
  MARKET_DELISTED: 'The market is delisted.',
  MARKET_SETTLED: 'The market has settled.',
  UNAUTHENTICATED: 'Log in to trade.',
  RATE_LIMITED: 'Too many requests. Try again in a moment.',
  PRICE_OUT_OF_BAND: 'This price is too far through the mark: it would trade at once far from it. Bring it closer to the mark.',
  WOULD_TRIGGER: 'The price has already passed this trigger: the order would be sent at once. Place a plain order, or move the trigger.',
  INVALID_TRIGGER_PRICE: 'The trigger price must be a multiple of the tick size.',
};

/** Where an API error belongs in the form, and what to say: {field, code, message}. */
// The order form's fields that a refusal can be said on.
const FORM_FIELDS = ['price', 'qty', 'leverage', 'reduceOnly', 'timeInForce', 'triggerPrice', 'callbackRate', 'takeProfit', 'stopLoss'];

export function errorForForm(error) {
  const code = error.code || 'ERROR';
  let field = error.field || FIELD_OF_CODE[code] || 'form';
  if (!FORM_FIELDS.includes(field)) field = 'form';
  // A code's own sentence where it speaks of the field the server named (an invalid
  // trigger price may be a take-profit's or a stop-loss's: the server's words then).
  const own = FRIENDLY[code] && (!error.field || !FIELD_OF_CODE[code] || FIELD_OF_CODE[code] === error.field);
  return { field, code, message: (own && FRIENDLY[code]) || error.message || code };
}

/**
 * Whether a conditional order fires as its watched price rises to its trigger (else as
 * it falls): a stop buys on a rise and sells on a fall, a take-profit the other way.
 * The server's rule is `trading.orders.request.fires`.
 */
export function triggerRises(type, side) {
  const stop = type.startsWith('STOP') || type === 'TRAILING_STOP_MARKET';
  return stop === (side === 'BUY');
}
