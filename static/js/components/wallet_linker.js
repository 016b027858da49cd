// WalletLinker modal: connect → challenge (GET link-wallet) → personal_sign → verify
// (POST link-wallet). The server checks the signature and the single-use nonce.
import { $, setText } from '../lib/dom.js';
import { get, post } from '../lib/api.js';
import { Modal } from './modal.js';
import { busy } from './loading.js';

export class WalletLinker extends EventTarget {
  constructor(dialog, { wallet, traderId, toaster }) {
    super();
    this.modal = new Modal(dialog);
    this.dialog = dialog;
    this.wallet = wallet;
    this.traderId = traderId;
    this.toaster = toaster;
    this.startBtn = $('[data-action=link]', dialog);
    this.startBtn.addEventListener('click', () => this.run());
    this.modal.addEventListener('open', () => this.reset());
  }

  open(opener) {
    this.modal.open(opener);
  }

  step(name) {
    const order = ['connect', 'challenge', 'sign', 'verify', 'done'];
    const at = order.indexOf(name);
    for (const li of this.dialog.querySelectorAll('.steps li')) {
      const i = order.indexOf(li.dataset.step);
      li.classList.toggle('done', i < at);
      li.classList.toggle('current', i === at);
    }
  }

  reset() {
    this.step('connect');
    setText($('.form-error', this.dialog), '');
    $('pre.message', this.dialog).hidden = true;
    setText($('[data-field=address]', this.dialog), this.wallet.address || 'not connected');
    this.startBtn.disabled = false;
  }

  async run() {
    const errorEl = $('.form-error', this.dialog);
    setText(errorEl, '');
    const restore = busy(this.startBtn, 'Working…');
    try {
      this.step('connect');
      const address = this.wallet.address || (await this.wallet.connect());
      setText($('[data-field=address]', this.dialog), address);
      this.step('challenge');
      const challenge = await get(`user/${this.traderId}/link-wallet`, { address });
      const pre = $('pre.message', this.dialog);
      pre.textContent = challenge.message;
      pre.hidden = false;
      this.step('sign');
      const signature = await this.wallet.sign(challenge.message);
      this.step('verify');
      const linked = await post(`user/${this.traderId}/link-wallet`, { address, signature, nonce: challenge.nonce });
      this.step('done');
      restore();
      this.startBtn.disabled = true;
      this.toaster.show({ title: 'Wallet linked', message: linked.address, kind: 'success' });
      this.dispatchEvent(new CustomEvent('linked', { detail: linked }));
      setTimeout(() => this.modal.close(), 600);
    } catch (err) {
      restore();
      const code = err.code ? `${err.code}: ` : '';
      setText(errorEl, `${code}${err.shortMessage || err.message}`);
    }
  }
}
