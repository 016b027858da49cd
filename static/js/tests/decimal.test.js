import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as d from '../lib/decimal.js';

test('parse and normalise decimal strings', () => {
  assert.equal(d.toString('64523.50'), '64523.5');
  assert.equal(d.toString('-0.000100'), '-0.0001');
  assert.equal(d.toString('.5'), '0.5');
  assert.equal(d.toString('7.'), '7');
  assert.equal(d.parse('1e5'), null);
  assert.equal(d.parse('abc'), null);
  assert.equal(d.parse(''), null);
  assert.equal(d.parse('.'), null);
});

test('arithmetic is exact where floats are not', () => {
  assert.equal(d.add('0.1', '0.2'), '0.3');
  assert.equal(d.sub('64500.5', '64500.25'), '0.25');
  assert.equal(d.mul('64500.5', '0.003'), '193.5015');
  assert.equal(d.mul('1.1', '1.1'), '1.21');
  assert.equal(d.add('99999999999999999.99', '0.01'), '100000000000000000');
  assert.equal(d.divFloor('1', '3', 4), '0.3333');
  assert.equal(d.divFloor('-1', '3', 2), '-0.34');
  assert.equal(d.cmp('10', '9.99'), 1);
  assert.equal(d.cmp('0.50', '0.5'), 0);
});

test('grid helpers', () => {
  assert.ok(d.isMultipleOf('64500.5', '0.5'));
  assert.ok(!d.isMultipleOf('64500.25', '0.5'));
  assert.ok(d.isMultipleOf('0.003', '0.001'));
  assert.ok(!d.isMultipleOf('0.0035', '0.001'));
  assert.equal(d.floorToStep('64512.7', '5'), '64510');
  assert.equal(d.ceilToStep('64512.7', '5'), '64515');
  assert.equal(d.ceilToStep('64515', '5'), '64515');
  assert.equal(d.floorToStep('0.01299', '0.001'), '0.012');
  assert.equal(d.decimalsOf('0.5'), 1);
  assert.equal(d.decimalsOf('0.0001'), 4);
  assert.equal(d.decimalsOf('5'), 0);
});

test('formatting for display', () => {
  assert.equal(d.format('1234567.891'), '1,234,567.891');
  assert.equal(d.format('1234567.891', { dp: 2 }), '1,234,567.89');
  assert.equal(d.format('0.005', { dp: 2 }), '0.01');
  assert.equal(d.format('-0.005', { dp: 2 }), '-0.01');
  assert.equal(d.format('-0.004', { dp: 2 }), '0.00');
  assert.equal(d.format('2.5', { dp: 0 }), '3');
  assert.equal(d.format('64500', { dp: 1 }), '64,500.0');
  assert.equal(d.format('1.5', { plus: true }), '+1.5');
  assert.equal(d.format('0', { plus: true }), '0');
  assert.equal(d.format(null), '—');
  assert.equal(d.format('garbage'), '—');
  assert.equal(d.format('123456789012345678901234.5', { dp: 1 }), '123,456,789,012,345,678,901,234.5');
  assert.equal(d.compact('1234567'), '1.23M');
  assert.equal(d.compact('999'), '999.00');
  assert.equal(d.compact('2500000000'), '2.50B');
});

test('ratio is bounded and only for widths', () => {
  assert.equal(d.ratio('1', '4'), 0.25);
  assert.equal(d.ratio('5', '4'), 1);
  assert.equal(d.ratio('1', '0'), 0);
});
