// Numbers for people, one way on every panel: a market's prices at its tick's decimals
// and its sizes at its lot's, money (the quote, USDC) at 2, percentages at 2, each with
// thousands separators; "—" where there is no value. The book, the trades, the account
// tables, the toasts, the info bar and the chart's axis all format through here.
import { compact, decimalsOf, format, mul, parse } from './decimal.js';

const known = new Map(); // symbol → { px, qty } decimals

/** Markets whose grids the formatters use when given a symbol. */
export function registerMarkets(markets) {
  for (const m of markets) known.set(m.symbol, { px: decimalsOf(m.tickSize), qty: decimalsOf(m.lotSize) });
}

function grid(market) {
  if (!market) return null;
  if (typeof market === 'string') return known.get(market) || null;
  return { px: decimalsOf(market.tickSize), qty: decimalsOf(market.lotSize) };
}

/** A price of `market` (a market object or a registered symbol): "64,523.5"; `step`
 * for a coarser grid than the tick (the book grouped by 10 ticks). */
export function price(value, market, { plus = false, step = null } = {}) {
  const g = grid(market);
  const dp = step !== null ? decimalsOf(step) : g ? g.px : null;
  return format(value, { dp, plus });
}

/** A size of `market` in its base asset: "0.120". */
export function size(value, market, { plus = false } = {}) {
  const g = grid(market);
  return format(value, { dp: g ? g.qty : null, plus });
}

/** An amount of the quote asset (USDC): "1,250.00"; `dp` for fees and other small sums. */
export function money(value, { plus = false, dp = 2 } = {}) {
  return format(value, { dp, plus });
}

/** A balance of `asset`: the quote (USDC) in cents, any other asset to 4 decimals. */
export function amount(value, asset) {
  return format(value, { dp: asset === 'USDC' ? 2 : 4 });
}

/** A figure with exactly `dp` decimals (greeks, leverage). */
export function fixed(value, dp) {
  return format(value, { dp });
}

/** A percentage given as a percent ("12.5" → "12.50%"). */
export function percent(value, { plus = false, dp = 2 } = {}) {
  if (value === null || value === undefined || parse(value) === null) return '—';
  return `${format(value, { dp, plus })}%`;
}

/** A fraction as a percentage ("0.0003" → "0.0300%"), for rates. */
export function rate(value, { dp = 4 } = {}) {
  if (value === null || value === undefined || parse(value) === null) return '—';
  return percent(mul(value, '100'), { dp, plus: false });
}

/** Volumes and open interest: "1.23M". */
export function volume(value) {
  return compact(value);
}

/**
 * A price the chart library hands over as a number (for its axis and crosshair): shown
 * like every other price of the market. Only drawing ever turns prices into numbers.
 */
export function chartPrice(n, market) {
  if (!Number.isFinite(n)) return '';
  const g = grid(market);
  const dp = g ? g.px : 2;
  return format(n.toFixed(dp), { dp });
}
