// TpslModal: a position's take-profit and stop-loss (POST /positions/{symbol}/tpsl).
// Each is a trigger that closes the whole position at market; one cancels the other.
import { $, setText } from '../lib/dom.js';
import { post } from '../lib/api.js';
import { isValid, sign } from '../lib/decimal.js';
import { price, size } from '../lib/format.js';
import { FormModal, clearErrors, fieldError, showApiError } from './modal.js';
import { busy } from './loading.js';

export class TpslModal extends FormModal {
  /** `current`: {takeProfit, stopLoss} of the position, as its open orders show them. */
  open(position, mode, current, opener) {
    this.position = position;
    this.mode = mode;
    this.current = current;
    this.form.reset();
    clearErrors(this.dialog);
    const f = this.form.elements;
    f.takeProfit.value = current.takeProfit?.triggerPrice ?? '';
    f.stopLoss.value = current.stopLoss?.triggerPrice ?? '';
    f.triggerBy.value = (current.takeProfit || current.stopLoss)?.triggerBy ?? 'MARK';
    const p = position;
    setText($('[data-field=position]', this.dialog), `${p.market} ${p.side} ${size(p.size, p.market)} · entry ${price(p.entryPrice, p.market)} · mark ${price(p.markPrice, p.market)}`);
    this.modal.open(opener);
  }

  async submit() {
    clearErrors(this.dialog);
    const f = this.form.elements;
    const body = { mode: this.mode, triggerBy: f.triggerBy.value };
    for (const field of ['takeProfit', 'stopLoss']) {
      const v = f[field].value.trim().replaceAll(',', '');
      if (v === '') {
        if (this.current[field]) body[field] = null; // had one: remove it
        continue;
      }
      if (!isValid(v) || sign(v) <= 0) {
        fieldError(this.dialog, field, 'Enter a positive price, or leave it empty for none.');
        f[field].focus();
        return;
      }
      body[field] = v;
    }
    const restore = busy($('button[type=submit]', this.form), 'Saving…');
    try {
      const r = await post(`positions/${encodeURIComponent(this.position.market)}/tpsl`, body);
      const said = [r.takeProfit && `TP ${price(r.takeProfit.triggerPrice, r.takeProfit.market)}`, r.stopLoss && `SL ${price(r.stopLoss.triggerPrice, r.stopLoss.market)}`];
      this.toaster.show({ title: `${this.position.market} TP/SL saved`, message: said.filter(Boolean).join(', ') || 'None set.', kind: 'success' });
      restore();
      this.modal.close();
    } catch (err) {
      restore();
      showApiError(this.dialog, err);
    }
  }
}
