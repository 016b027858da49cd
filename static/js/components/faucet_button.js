// PaperFaucetButton: credits PAPER funds; disabled with a countdown during cooldown.
// The API tells the cooldown only on refusal (429 FAUCET_COOLDOWN with retryAfter), so
// the end of the cooldown is remembered in this browser after each use.
import { countdown, setText } from '../lib/dom.js';
import { post } from '../lib/api.js';
import { format } from '../lib/decimal.js';

export class FaucetButton {
  /** `buttons`: every faucet button of the page (header, balances); they share one state. */
  constructor(buttons, { toaster, traderId, cooldownSeconds }) {
    this.buttons = buttons.filter(Boolean);
    this.toaster = toaster;
    this.key = `dex:faucet:${traderId}`;
    this.cooldownSeconds = cooldownSeconds;
    this.timer = null;
    for (const b of this.buttons) b.addEventListener('click', () => this.claim());
    this.refresh();
  }

  until() {
    return Number(localStorage.getItem(this.key) || 0);
  }

  refresh() {
    clearTimeout(this.timer);
    const left = this.until() - Date.now();
    for (const b of this.buttons) {
      const label = b.querySelector('.label');
      if (left > 0) {
        b.disabled = true;
        setText(label, `Faucet in ${countdown(left)}`);
        b.setAttribute('aria-label', `Faucet in ${countdown(left)}: paper funds available again then`);
      } else {
        b.disabled = false;
        setText(label, 'Get paper funds');
        b.removeAttribute('aria-label');
      }
    }
    if (left > 0) this.timer = setTimeout(() => this.refresh(), left > 120000 ? 30000 : 1000);
  }

  async claim() {
    for (const b of this.buttons) b.disabled = true;
    try {
      const r = await post('paper/faucet');
      const credited = Object.entries(r.credited).map(([a, v]) => `${format(v)} ${a}`).join(', ');
      this.toaster.show({ title: 'Paper funds credited', message: credited, kind: 'success' });
      localStorage.setItem(this.key, String(Date.now() + this.cooldownSeconds * 1000));
    } catch (err) {
      if (err.code === 'FAUCET_COOLDOWN' || err.code === 'RATE_LIMITED') {
        localStorage.setItem(this.key, String(Date.now() + (err.retryAfter || 60) * 1000));
        this.toaster.show({ title: 'Faucet cooling down', message: `Try again in ${countdown((err.retryAfter || 60) * 1000)}.`, kind: 'warning' });
      } else {
        this.toaster.show({ title: 'Faucet refused', message: err.message, kind: 'error' });
      }
    }
    this.refresh();
  }
}
