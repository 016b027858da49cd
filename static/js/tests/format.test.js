import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as f from '../lib/format.js';

const BTC = { symbol: 'BTC-PERP', tickSize: '0.5', lotSize: '0.001' };
const CXPT = { symbol: 'CXPT-USDC', tickSize: '0.0001', lotSize: '0.1' };
f.registerMarkets([BTC, CXPT]);

test('a price shows its tick decimals and thousands, by market or by symbol', () => {
  assert.equal(f.price('63723', BTC), '63,723.0');
  assert.equal(f.price('63723', 'BTC-PERP'), '63,723.0');
  assert.equal(f.price('64700.53942', 'BTC-PERP'), '64,700.5');
  assert.equal(f.price('1.25', 'CXPT-USDC'), '1.2500');
  assert.equal(f.price('64000', 'BTC-PERP', { step: '50' }), '64,000');
  assert.equal(f.price(null, BTC), '—');
  // An unknown market: the value as given, grouped.
  assert.equal(f.price('1234.5678', 'NOPE'), '1,234.5678');
});

test('a size shows its lot decimals', () => {
  assert.equal(f.size('0.12', BTC), '0.120');
  assert.equal(f.size('1500', 'CXPT-USDC'), '1,500.0');
});

test('money in cents, balances by asset, percentages and rates', () => {
  assert.equal(f.money('1000000'), '1,000,000.00');
  assert.equal(f.money('-11', { plus: true }), '-11.00');
  assert.equal(f.money('3.5', { plus: true }), '+3.50');
  assert.equal(f.money('0.0032', { dp: 4 }), '0.0032');
  assert.equal(f.amount('99958.613', 'USDC'), '99,958.61');
  assert.equal(f.amount('100000', 'CXPT'), '100,000.0000');
  assert.equal(f.percent('-0.05', { plus: true }), '-0.05%');
  assert.equal(f.percent('1.2', { plus: true }), '+1.20%');
  assert.equal(f.percent(null), '—');
  assert.equal(f.rate('0.0000312'), '0.0031%');
  assert.equal(f.volume('1234567.8'), '1.23M');
});

test('the chart axis shows a number as the panels show that price', () => {
  assert.equal(f.chartPrice(64123.5, BTC), '64,123.5');
  assert.equal(f.chartPrice(64000, 'BTC-PERP'), '64,000.0');
  assert.equal(f.chartPrice(1.25, CXPT), '1.2500');
  assert.equal(f.chartPrice(Number.NaN, BTC), '');
});
