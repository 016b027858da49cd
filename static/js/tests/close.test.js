import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeToast } from '../components/account_panel.js';

const position = { market: 'BTC-PERP', size: '0.013' };

test('a close the book fills in full says it closed', () => {
  const t = closeToast(position, { qty: '0.013', filledQty: '0.013' });
  assert.equal(t.title, 'BTC-PERP closed');
  assert.equal(t.message, 'Closed 0.013 at market.');
});

test('a part closed in full says what stays open', () => {
  const t = closeToast(position, { qty: '0.006', filledQty: '0.006' });
  assert.equal(t.title, 'BTC-PERP reduced');
  assert.equal(t.message, 'Closed 0.006 at market; 0.007 still open.');
});

test('a close the book could not fill in full says what it did and what is left', () => {
  const t = closeToast(position, { qty: '0.013', filledQty: '0.008' });
  assert.equal(t.title, 'BTC-PERP closed in part');
  assert.equal(t.message, 'Closed 0.008 of 0.013 at market; 0.005 still open.');
});

test('a close nothing filled says so', () => {
  const t = closeToast(position, { qty: '0.013', filledQty: '0' });
  assert.equal(t.kind, 'error');
  assert.match(t.message, /Nothing filled at market; the position is still 0.013/);
});
