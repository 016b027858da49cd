// DepositModal and WithdrawModal (REAL funds). Where the exchange watches a chain
// (GET /api/v1/vault names a vault contract), a deposit is made from the browser wallet:
// approve, deposit, then the confirmations the exchange waits for, then the credit.
// Elsewhere a deposit is reported by its transaction hash and credited once staff
// confirm it. A withdrawal goes to a linked address and locks the amount at once; its
// status is followed here through to the transaction that paid it.
import { $, h, setText, shortAddress } from '../lib/dom.js';
import { get, post } from '../lib/api.js';
import { cmp, format, isValid, sign } from '../lib/decimal.js';
import { approveAndDeposit, confirmationsOf, vaultInfo } from '../lib/vault_chain.js';
import { Modal, clearErrors, fieldError, showApiError } from './modal.js';
import { busy } from './loading.js';

const POLL_MS = 1500;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class DepositModal extends EventTarget {
  constructor(dialog, { toaster, wallet = null, traderId = null }) {
    super();
    this.dialog = dialog;
    this.modal = new Modal(dialog);
    this.toaster = toaster;
    this.wallet = wallet;
    this.traderId = traderId;
    this.vault = null;
    this.form = $('form', dialog);
    this.modal.addEventListener('open', () => this.prepare());
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
  }

  open(opener) {
    this.modal.open(opener);
  }

  get onChain() {
    return Boolean(this.vault && this.vault.vaultAddress && this.wallet);
  }

  async prepare() {
    this.form.reset();
    clearErrors(this.dialog);
    this.steps(null);
    $('[data-field=tx]', this.dialog).hidden = true;
    try {
      this.vault = await vaultInfo();
    } catch {
      this.vault = null;
    }
    const chain = this.onChain;
    for (const el of this.dialog.querySelectorAll('[data-when=chain]')) el.hidden = !chain;
    for (const el of this.dialog.querySelectorAll('[data-when=notice]')) el.hidden = chain;
    setText($('[data-field=submit]', this.dialog), chain ? 'Approve and deposit' : 'Report deposit');
    if (!chain) return;
    const v = this.vault;
    setText($('[data-field=chain]', this.dialog), `${v.chainName} (chain id ${v.chainId})`);
    setText($('[data-field=vault]', this.dialog), v.vaultAddress);
    setText($('[data-field=confirmations]', this.dialog), String(v.confirmations));
    setText($('[data-field=needed]', this.dialog), String(v.confirmations));
    const none = !this.wallet.available;
    $('[data-when=no-wallet]', this.dialog).hidden = !none;
    $('[data-field=submit]', this.dialog).disabled = none;
  }

  /** Mark step `name` active (earlier ones done); null hides the list. */
  steps(name, state = 'active') {
    const list = $('[data-field=steps]', this.dialog);
    list.hidden = name === null;
    let reached = false;
    for (const li of list.children) {
      if (li.dataset.step === name) {
        li.dataset.state = state;
        reached = true;
      } else {
        li.dataset.state = reached || name === null ? '' : 'done';
      }
    }
  }

  async submit() {
    clearErrors(this.dialog);
    const f = this.form.elements;
    const amount = f.amount.value.trim();
    let bad = false;
    if (!isValid(amount) || sign(amount) <= 0) {
      fieldError(this.dialog, 'amount', 'Enter a positive amount.');
      bad = true;
    }
    if (this.onChain) {
      if (!bad) await this.depositFromWallet(f.asset.value, amount);
      return;
    }
    const txHash = f.txHash.value.trim();
    if (!/^0x[0-9a-fA-F]{64}$/.test(txHash)) {
      fieldError(this.dialog, 'txHash', 'A transaction hash is 0x followed by 64 hex digits.');
      bad = true;
    }
    if (bad) return;
    const restore = busy($('button[type=submit]', this.form), 'Submitting…');
    try {
      const t = await post('vault/deposit', { asset: f.asset.value, amount, txHash });
      this.toaster.show({ title: 'Deposit recorded', message: `${format(t.amount)} ${t.asset}: ${t.status.toLowerCase()} until confirmed on chain.`, kind: 'success' });
      this.dispatchEvent(new CustomEvent('done', { detail: t }));
      restore();
      this.modal.close();
    } catch (err) {
      restore();
      showApiError(this.dialog, err);
    }
  }

  async depositFromWallet(asset, amount) {
    const button = $('button[type=submit]', this.form);
    const restore = busy(button, 'Waiting for the wallet…');
    const stepOf = { chain: 'approve', approve: 'approve', approved: 'deposit', deposit: 'deposit', sent: 'deposit', mined: 'confirm' };
    let current = 'approve';
    try {
      const { hash, block } = await approveAndDeposit({
        wallet: this.wallet,
        vault: this.vault,
        asset,
        amount,
        traderId: this.traderId,
        onStep: (name, detail) => {
          current = stepOf[name];
          this.steps(current);
          if (detail && detail.hash) {
            $('[data-field=tx]', this.dialog).hidden = false;
            setText($('[data-field=tx-hash]', this.dialog), detail.hash);
          }
        },
      });
      restore();
      button.disabled = true;
      current = 'confirm';
      await this.followConfirmations(block);
      current = 'credit';
      this.steps('credit');
      const t = await this.followCredit(hash);
      this.steps('credit', 'done');
      this.toaster.show({ title: 'Deposit credited', message: `${format(t.amount)} ${t.asset} in your REAL balance.`, kind: 'success' });
      this.dispatchEvent(new CustomEvent('done', { detail: t }));
    } catch (err) {
      restore();
      this.steps(current, 'failed');
      const form = $('.form-error', this.dialog);
      setText(form, err.shortMessage || err.message || String(err));
    }
  }

  async followConfirmations(block) {
    const needed = this.vault.confirmations;
    const provider = await this.wallet.provider();
    for (;;) {
      const n = Math.min(needed, confirmationsOf(await provider.getBlockNumber(), block));
      setText($('[data-field=confirmed]', this.dialog), String(n));
      if (n >= needed) return;
      await sleep(POLL_MS);
    }
  }

  async followCredit(hash) {
    for (;;) {
      const page = await get('vault/transfers', { limit: 20 });
      const t = page.results.find((x) => x.type === 'DEPOSIT' && x.txHash && x.txHash.toLowerCase() === hash.toLowerCase());
      if (t && t.status === 'CONFIRMED') return t;
      await sleep(POLL_MS);
    }
  }
}

export class WithdrawModal extends EventTarget {
  constructor(dialog, { toaster, balances, wallets, onLinkWallet }) {
    super();
    this.dialog = dialog;
    this.modal = new Modal(dialog);
    this.toaster = toaster;
    this.balances = balances; // () => REAL balances
    this.wallets = wallets; // () => linked addresses
    this.form = $('form', dialog);
    const f = this.form.elements;
    f.asset.addEventListener('change', () => this.showAvailable());
    $('[data-action=max]', dialog).addEventListener('click', () => {
      f.amount.value = this.available();
    });
    $('[data-action=link-wallet]', dialog).addEventListener('click', (e) => {
      this.modal.close();
      onLinkWallet(e.currentTarget);
    });
    this.modal.addEventListener('open', () => this.prepare());
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
  }

  open(opener) {
    this.modal.open(opener);
  }

  available() {
    const asset = this.form.elements.asset.value;
    const b = this.balances().find((x) => x.asset === asset && x.mode === 'REAL');
    return b ? b.available : '0';
  }

  showAvailable() {
    setText($('[data-field=available]', this.dialog), `${format(this.available())} ${this.form.elements.asset.value}`);
  }

  prepare() {
    this.form.reset();
    clearErrors(this.dialog);
    const select = this.form.elements.address;
    const wallets = this.wallets();
    select.replaceChildren(...wallets.map((a) => h('option', { value: a }, `${shortAddress(a)} (${a})`)));
    const none = !wallets.length;
    $('[data-when=no-wallet]', this.dialog).hidden = !none;
    select.disabled = none;
    $('button[type=submit]', this.form).disabled = none;
    this.showAvailable();
  }

  async submit() {
    clearErrors(this.dialog);
    const f = this.form.elements;
    const amount = f.amount.value.trim();
    if (!isValid(amount) || sign(amount) <= 0) {
      fieldError(this.dialog, 'amount', 'Enter a positive amount.');
      return;
    }
    if (cmp(amount, this.available()) > 0) {
      fieldError(this.dialog, 'amount', `At most ${format(this.available())} ${f.asset.value} is available.`);
      return;
    }
    const restore = busy($('button[type=submit]', this.form), 'Requesting…');
    try {
      const t = await post('vault/withdraw', { asset: f.asset.value, amount, address: f.address.value });
      this.toaster.show({ title: 'Withdrawal requested', message: `${format(t.amount)} ${t.asset} to ${shortAddress(t.address)}: awaiting approval.`, kind: 'success' });
      this.dispatchEvent(new CustomEvent('done', { detail: t }));
      restore();
      this.modal.close();
      this.follow(t);
    } catch (err) {
      restore();
      showApiError(this.dialog, err);
    }
  }

  /** Follow a withdrawal to its end: approved and paid (with the transaction hash), or
   *  rejected; toasts each change. Stops when the page goes. */
  async follow(t) {
    const words = {
      PENDING: 'awaiting approval',
      SENDING: 'approved, being sent',
      APPROVED: 'paid',
      REJECTED: 'rejected, the amount is available again',
    };
    let last = `${t.status}:${t.txHash || ''}`;
    for (;;) {
      await sleep(POLL_MS * 2);
      let now;
      try {
        now = (await get('vault/transfers', { limit: 50 })).results.find((x) => x.id === t.id);
      } catch {
        continue;
      }
      if (!now) return;
      const key = `${now.status}:${now.txHash || ''}`;
      if (key !== last) {
        last = key;
        const tx = now.txHash ? ` Transaction ${now.txHash}.` : '';
        const note = now.note && now.status === 'PENDING' ? ` ${now.note}.` : '';
        this.toaster.show({
          title: `Withdrawal ${words[now.status] || now.status.toLowerCase()}`,
          message: `${format(now.amount)} ${now.asset} to ${shortAddress(now.address)}.${tx}${note}`,
          kind: now.status === 'REJECTED' ? 'error' : 'success',
        });
        this.dispatchEvent(new CustomEvent('update', { detail: now }));
      }
      if (now.status === 'APPROVED' || now.status === 'REJECTED') return;
    }
  }
}
