// Account page: API keys, linked wallets, vault transfers.
import { $, $$, h, readJson, setText, dateTimeOf, shortAddress } from '../lib/dom.js';
import { del, get, post } from '../lib/api.js';
import { format } from '../lib/decimal.js';
import { BrowserWallet } from '../lib/wallet.js';
import { Toaster } from '../components/toaster.js';
import { DataTable } from '../components/datatable.js';
import { WalletConnectButton } from '../components/wallet_connect.js';
import { WalletLinker } from '../components/wallet_linker.js';
import { DepositModal, WithdrawModal } from '../components/vault_modals.js';
import { installTooltips } from '../components/tooltip.js';
import { busy } from '../components/loading.js';

const config = readJson('dex-config');
const toaster = new Toaster($('#toaster'));
installTooltips();
const wallet = new BrowserWallet({ ethersUrl: config.ethersUrl, storageKey: `dex:wallet:${config.user.traderId}` });
new WalletConnectButton($('#wallet-connect'), { wallet, toaster });
let linked = config.linkedWallets.slice();
let balances = [];
let nextToken = null;

function rowButton(td, label, cls, aria, onClick) {
  let b = td.firstChild;
  if (!b || b.dataset.aria !== aria) {
    b = h(`button.btn.btn-sm.${cls}`, { type: 'button', 'aria-label': aria, dataset: { aria } }, label);
    b.addEventListener('click', () => onClick(b));
  }
  return b;
}

const wallets = new DataTable($('[data-table=wallets]'), {
  caption: 'Linked wallets',
  rowKey: (w) => w.address,
  empty: 'No wallet linked. Withdrawals go only to linked wallets.',
  columns: [
    { key: 'address', label: 'Address', render: (w) => h('span.num', { title: w.address, text: w.address }) },
    {
      key: 'unlink', label: 'Unlink',
      render: (w, td) => rowButton(td, 'Unlink', 'btn-ghost', `Unlink ${w.address}`, async (b) => {
        const restore = busy(b);
        try {
          await del(`user/${config.user.traderId}/link-wallet/${w.address}`);
          linked = linked.filter((a) => a !== w.address);
          showWallets();
          toaster.show({ title: 'Wallet unlinked', message: shortAddress(w.address), kind: 'info' });
        } catch (err) {
          restore();
          toaster.show({ title: 'Unlink refused', message: err.message, kind: 'error' });
        }
      }),
    },
  ],
});
function showWallets() {
  wallets.setRows(linked.map((address) => ({ address })));
}
showWallets();

const keys = new DataTable($('[data-table=keys]'), {
  caption: 'API keys',
  empty: 'No API keys. Create one for a trading bot.',
  columns: [
    { key: 'name', label: 'Name', sortable: true, render: (k) => k.name || '—' },
    { key: 'prefix', label: 'Key', render: (k) => `${k.prefix}…` },
    { key: 'scopes', label: 'Scopes', render: (k) => k.scopes.join(', ') },
    { key: 'createdAt', label: 'Created', sortable: true, render: (k) => dateTimeOf(k.createdAt) },
    { key: 'lastUsedAt', label: 'Last used', sortable: true, render: (k) => dateTimeOf(k.lastUsedAt) },
    {
      key: 'revoke', label: 'Revoke',
      render: (k, td) => rowButton(td, 'Revoke', 'btn-danger', `Revoke key ${k.prefix}`, async (b) => {
        const restore = busy(b);
        try {
          await del(`api-keys/${k.id}`);
          keys.remove(k.id);
          toaster.show({ title: 'API key revoked', message: k.name || k.prefix, kind: 'info' });
        } catch (err) {
          restore();
          toaster.show({ title: 'Revoke refused', message: err.message, kind: 'error' });
        }
      }),
    },
  ],
});

const balanceTable = new DataTable($('[data-table=balances]'), {
  caption: 'REAL balances',
  rowKey: (b) => b.asset,
  empty: 'No REAL funds yet: deposit to start.',
  columns: [
    { key: 'asset', label: 'Asset' },
    { key: 'total', label: 'Total', num: true, render: (b) => format(b.total, { dp: 4 }) },
    { key: 'available', label: 'Available', num: true, render: (b) => format(b.available, { dp: 4 }) },
    { key: 'locked', label: 'Locked', num: true, render: (b) => format(b.locked, { dp: 4 }) },
  ],
});

const transfers = new DataTable($('[data-table=transfers]'), {
  caption: 'Vault transfers',
  empty: 'No deposits or withdrawals yet.',
  columns: [
    { key: 'createdAt', label: 'Time', sortable: true, render: (t) => dateTimeOf(t.createdAt) },
    { key: 'type', label: 'Type', sortable: true },
    { key: 'asset', label: 'Asset' },
    { key: 'amount', label: 'Amount', num: true, sortable: true, render: (t) => format(t.amount) },
    { key: 'status', label: 'Status', sortable: true, className: (t) => ({ CONFIRMED: 'up', APPROVED: 'up', REJECTED: 'down', PENDING: 'warn' })[t.status] },
    { key: 'ref', label: 'Tx / address', render: (t) => h('span.num', { title: t.txHash || t.address || '', text: t.txHash ? shortAddress(t.txHash) : shortAddress(t.address) || '—' }) },
  ],
});
const moreBtn = $('[data-action=load-more]');

async function loadTransfers(more = false) {
  const page = await get('vault/transfers', { limit: 20, nextToken: more ? nextToken : null });
  if (more) transfers.append(page.results);
  else transfers.setRows(page.results);
  nextToken = page.nextToken;
  moreBtn.hidden = !nextToken;
}
moreBtn.addEventListener('click', async () => {
  const restore = busy(moreBtn, 'Loading…');
  try {
    await loadTransfers(true);
  } finally {
    restore();
    moreBtn.hidden = !nextToken;
  }
});

async function loadBalances() {
  balances = await get('balances', { mode: 'REAL' });
  balanceTable.setRows(balances);
}

async function loadAll() {
  const tasks = [
    get('me').then((me) => {
      setText($('[data-field=paperPoints]'), format(me.paperPoints, { dp: 2, plus: true }));
      linked = me.linkedWallets;
      showWallets();
    }),
    get('api-keys').then((rows) => keys.setRows(rows)),
    loadBalances(),
    loadTransfers(),
  ];
  const results = await Promise.allSettled(tasks);
  for (const r of results) {
    if (r.status === 'rejected') toaster.show({ title: 'Could not load part of the page', message: r.reason.message, kind: 'error' });
  }
}

$('#api-key-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  const scopes = $$('input[name=scopes]:checked', form).map((i) => i.value);
  setText($('.form-error', form), '');
  const restore = busy($('button[type=submit]', form), 'Creating…');
  try {
    const key = await post('api-keys', { name: form.elements.name.value.trim(), scopes });
    const box = $('#new-key');
    box.hidden = false;
    box.replaceChildren(h('strong', { text: 'Copy this key now: it is shown only once. ' }), h('span', { text: key.key }));
    const { key: _secret, ...row } = key;
    keys.upsert(row);
    form.reset();
  } catch (err) {
    setText($('.form-error', form), `${err.code}: ${err.message}`);
  }
  restore();
});

const linker = new WalletLinker($('#wallet-linker'), { wallet, traderId: config.user.traderId, toaster });
linker.addEventListener('linked', (e) => {
  if (!linked.includes(e.detail.address)) linked.push(e.detail.address);
  showWallets();
});
const deposit = new DepositModal($('#deposit-modal'), { toaster, wallet, traderId: config.user.traderId });
deposit.addEventListener('done', () => loadTransfers());
const withdraw = new WithdrawModal($('#withdraw-modal'), {
  toaster,
  balances: () => balances,
  wallets: () => linked,
  onLinkWallet: (opener) => linker.open(opener),
});
withdraw.addEventListener('done', () => Promise.all([loadTransfers(), loadBalances()]));
withdraw.addEventListener('update', () => Promise.all([loadTransfers(), loadBalances()]));
$('[data-action=link-wallet]').addEventListener('click', (e) => linker.open(e.currentTarget));
$('[data-action=deposit]').addEventListener('click', (e) => deposit.open(e.currentTarget));
$('[data-action=withdraw]').addEventListener('click', async (e) => {
  const opener = e.currentTarget;
  await loadBalances().catch(() => {});
  withdraw.open(opener);
});

loadAll();
window.dex = { wallet, keys, transfers, wallets };
