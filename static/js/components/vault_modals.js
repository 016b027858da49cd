// DepositModal and WithdrawModal (REAL funds). A deposit is reported by its on-chain
// transaction hash and credited once confirmed; a withdrawal goes to a linked address
// and locks the amount at once until staff approve or reject it.
import { $, h, setText, shortAddress } from '../lib/dom.js';
import { post } from '../lib/api.js';
import { cmp, format, isValid, sign } from '../lib/decimal.js';
import { Modal, clearErrors, fieldError, showApiError } from './modal.js';
import { busy } from './loading.js';

export class DepositModal extends EventTarget {
  constructor(dialog, { toaster }) {
    super();
    this.dialog = dialog;
    this.modal = new Modal(dialog);
    this.toaster = toaster;
    this.form = $('form', dialog);
    this.modal.addEventListener('open', () => {
      this.form.reset();
      clearErrors(dialog);
    });
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
  }

  open(opener) {
    this.modal.open(opener);
  }

  async submit() {
    clearErrors(this.dialog);
    const f = this.form.elements;
    const amount = f.amount.value.trim();
    const txHash = f.txHash.value.trim();
    let bad = false;
    if (!isValid(amount) || sign(amount) <= 0) {
      fieldError(this.dialog, 'amount', 'Enter a positive amount.');
      bad = true;
    }
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
    } catch (err) {
      restore();
      showApiError(this.dialog, err);
    }
  }
}
