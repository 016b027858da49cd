// CloseLimitModal: close a position, or a part of it, with a reduce-only limit order
// (POST /positions/{symbol}/close with a price).
import { $, setText } from '../lib/dom.js';
import { post } from '../lib/api.js';
import { isValid, sign } from '../lib/decimal.js';
import { price, size } from '../lib/format.js';
import { FormModal, clearErrors, fieldError, showApiError } from './modal.js';
import { busy } from './loading.js';

export class CloseLimitModal extends FormModal {
  open(position, mode, opener) {
    this.position = position;
    this.mode = mode;
    this.form.reset();
    clearErrors(this.dialog);
    const p = position;
    setText($('[data-field=position]', this.dialog), `${p.market} ${p.side} ${size(p.size, p.market)} · entry ${price(p.entryPrice, p.market)} · mark ${price(p.markPrice, p.market)}`);
    this.modal.open(opener);
  }

  async submit() {
    clearErrors(this.dialog);
    const f = this.form.elements;
    const limit = f.price.value.trim().replaceAll(',', '');
    if (!isValid(limit) || sign(limit) <= 0) {
      fieldError(this.dialog, 'price', 'Enter a positive price.');
      f.price.focus();
      return;
    }
    const restore = busy($('button[type=submit]', this.form), 'Placing…');
    try {
      const order = await post(`positions/${encodeURIComponent(this.position.market)}/close`, { mode: this.mode, price: limit, fraction: f.fraction.value });
      this.toaster.show({ title: `Limit close placed`, message: `${order.side} ${size(order.qty, order.market)} ${order.market} @ ${price(order.price, order.market)}, reduce-only.`, kind: 'success' });
      restore();
      this.modal.close();
    } catch (err) {
      restore();
      showApiError(this.dialog, err);
    }
  }
}
