import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateOrder, errorForForm } from '../lib/validate.js';

const market = { symbol: 'BTC-PERP', tickSize: '0.5', lotSize: '0.001', minNotional: '10', status: 'ACTIVE' };

test('a limit order on the grids above the minimum is fine', () => {
  const r = validateOrder({ type: 'LIMIT', side: 'BUY', price: '64000.5', qty: '0.01' }, market);
  assert.deepEqual(r, { ok: true, errors: {} });
});

test('price off the tick grid', () => {
  const r = validateOrder({ type: 'LIMIT', side: 'BUY', price: '64000.25', qty: '0.01' }, market);
  assert.equal(r.errors.price.code, 'INVALID_PRICE');
  assert.match(r.errors.price.message, /multiple of 0.5/);
});

test('qty off the lot grid, missing, negative or not a number', () => {
  for (const qty of ['0.0015', '-1', 'abc', '0', '1e3']) {
    const r = validateOrder({ type: 'LIMIT', side: 'SELL', price: '64000', qty }, market);
    assert.equal(r.errors.qty.code, 'INVALID_QTY', qty);
  }
  assert.equal(validateOrder({ type: 'LIMIT', price: '1', qty: ' ' }, market).errors.qty.code, 'MISSING_FIELD');
});

test('below the minimum notional', () => {
  const r = validateOrder({ type: 'LIMIT', side: 'BUY', price: '1000', qty: '0.009' }, market);
  assert.equal(r.errors.qty.code, 'MIN_NOTIONAL');
  assert.ok(validateOrder({ type: 'LIMIT', side: 'BUY', price: '1000', qty: '0.01' }, market).ok);
});

test('market orders take their notional from the opposite best price', () => {
  const ref = { bestBid: '100', bestAsk: '2000' };
  assert.ok(validateOrder({ type: 'MARKET', side: 'BUY', qty: '0.005', timeInForce: 'IOC' }, market, ref).ok);
  const sell = validateOrder({ type: 'MARKET', side: 'SELL', qty: '0.005', timeInForce: 'IOC' }, market, ref);
  assert.equal(sell.errors.qty.code, 'MIN_NOTIONAL');
  // Without a book there is nothing to check against: the server decides.
  assert.ok(validateOrder({ type: 'MARKET', side: 'SELL', qty: '0.001', timeInForce: 'IOC' }, market).ok);
  const postOnly = validateOrder({ type: 'MARKET', side: 'BUY', qty: '1', timeInForce: 'POST_ONLY' }, market);
  assert.equal(postOnly.errors.timeInForce.code, 'INVALID_TIME_IN_FORCE');
});

test('a paused market refuses at once', () => {
  const r = validateOrder({ type: 'LIMIT', side: 'BUY', price: '1', qty: '100' }, { ...market, status: 'PAUSED' });
  assert.equal(r.errors.form.code, 'MARKET_PAUSED');
});

test('API errors land on their field', () => {
  assert.deepEqual(errorForForm({ code: 'INVALID_PRICE', message: 'm', field: 'price' }).field, 'price');
  assert.equal(errorForForm({ code: 'INSUFFICIENT_MARGIN', message: 'm' }).field, 'qty');
  assert.match(errorForForm({ code: 'INSUFFICIENT_MARGIN', message: 'm' }).message, /free margin/);
  assert.equal(errorForForm({ code: 'MARKET_PAUSED', message: 'm' }).field, 'form');
  assert.equal(errorForForm({ code: 'UNKNOWN_FIELD', message: 'x', field: 'foo' }).field, 'form');
  assert.equal(errorForForm({ code: 'SOMETHING_NEW', message: 'server says' }).message, 'server says');
});

test('which way a conditional order fires', async () => {
  const { triggerRises } = await import('../lib/validate.js');
  assert.equal(triggerRises('STOP_MARKET', 'SELL'), false); // a long's stop-loss: on a fall
  assert.equal(triggerRises('STOP_LIMIT', 'BUY'), true);
  assert.equal(triggerRises('TRAILING_STOP_MARKET', 'SELL'), false); // follows the highs, fires on a fall
  assert.equal(triggerRises('TAKE_PROFIT_MARKET', 'SELL'), true); // a long's take-profit: on a rise
  assert.equal(triggerRises('TAKE_PROFIT_LIMIT', 'BUY'), false);
});

test('numbers as people type them: thousands separators and exponents read, a decimal comma explained', async () => {
  const { readNumber, DECIMAL_COMMA } = await import('../lib/validate.js');
  assert.deepEqual(readNumber('70,000'), { value: '70000', error: null });
  assert.deepEqual(readNumber('1,234,567.5'), { value: '1234567.5', error: null });
  assert.deepEqual(readNumber('70 000'), { value: '70000', error: null });
  assert.deepEqual(readNumber('1e5'), { value: '100000', error: null });
  assert.deepEqual(readNumber('1.5E3'), { value: '1500', error: null });
  assert.deepEqual(readNumber('2e-3'), { value: '0.002', error: null });
  assert.deepEqual(readNumber(' 64000.5 '), { value: '64000.5', error: null });
  assert.deepEqual(readNumber('0,5'), { value: '0,5', error: DECIMAL_COMMA });
  assert.deepEqual(readNumber('70,00'), { value: '70,00', error: DECIMAL_COMMA });
  assert.deepEqual(readNumber('abc'), { value: 'abc', error: null });
  assert.deepEqual(readNumber(''), { value: '', error: null });
});
