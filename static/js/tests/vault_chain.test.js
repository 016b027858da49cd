import { test } from 'node:test';
import assert from 'node:assert/strict';
import { confirmationsOf, traderIdBytes } from '../lib/vault_chain.js';

test('a trader id is the contract bytes16', () => {
  assert.equal(traderIdBytes('3F2504E0-4F89-11D3-9A0C-0305E82C3301'), '0x3f2504e04f8911d39a0c0305e82c3301');
  assert.throws(() => traderIdBytes('nope'));
});

test('confirmations count the block itself', () => {
  assert.equal(confirmationsOf(10, 10), 1);
  assert.equal(confirmationsOf(12, 10), 3);
  assert.equal(confirmationsOf(9, 10), 0);
});
