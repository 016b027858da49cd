// WalletConnectButton: connect, show the address, disconnect.
import { setText, shortAddress } from '../lib/dom.js';

export class WalletConnectButton {
  constructor(root, { wallet, toaster }) {
    this.root = root;
    this.wallet = wallet;
    this.toaster = toaster;
    this.connectBtn = root.querySelector('[data-action=connect]');
    this.addressEl = root.querySelector('[data-field=address]');
    this.disconnectBtn = root.querySelector('[data-action=disconnect]');
    this.connectBtn.addEventListener('click', () => this.connect());
    this.disconnectBtn.addEventListener('click', () => wallet.disconnect());
    wallet.addEventListener('change', () => this.render());
    this.render();
    wallet.restore().catch(() => {});
  }

  async connect() {
    this.connectBtn.disabled = true;
    try {
      await this.wallet.connect();
      this.toaster.show({ title: 'Wallet connected', message: this.wallet.address, kind: 'success' });
    } catch (err) {
      this.toaster.show({ title: 'Wallet not connected', message: err.shortMessage || err.message, kind: 'error' });
    }
    this.connectBtn.disabled = false;
  }

  render() {
    const a = this.wallet.address;
    this.connectBtn.hidden = Boolean(a);
    this.addressEl.hidden = !a;
    this.disconnectBtn.hidden = !a;
    setText(this.addressEl, a ? shortAddress(a) : '');
    this.addressEl.title = a || '';
    this.addressEl.dataset.address = a || '';
  }
}
