// Modal on <dialog>: showModal() makes the page behind it inert; Tab and Shift+Tab
// cycle inside it, Esc closes it, and focus returns to what opened it.
import { $, setText } from '../lib/dom.js';

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

export class Modal extends EventTarget {
  constructor(dialog) {
    super();
    this.dialog = dialog;
    this.opener = null;
    dialog.addEventListener('keydown', (e) => this.onKey(e));
    dialog.addEventListener('close', () => {
      this.dispatchEvent(new Event('close'));
      if (this.opener && this.opener.isConnected) this.opener.focus();
    });
    dialog.addEventListener('click', (e) => {
      // A click on the backdrop lands on the dialog element itself.
      if (e.target === dialog) this.close();
    });
    for (const btn of dialog.querySelectorAll('[data-close]')) btn.addEventListener('click', () => this.close());
  }

  get isOpen() {
    return this.dialog.open;
  }

  open(opener = document.activeElement) {
    this.opener = opener;
    if (!this.dialog.open) this.dialog.showModal();
    const first = this.dialog.querySelector('[autofocus]') || this.focusables()[0];
    if (first) first.focus();
    this.dispatchEvent(new Event('open'));
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  focusables() {
    return Array.from(this.dialog.querySelectorAll(FOCUSABLE)).filter((el) => el.offsetParent !== null);
  }

  onKey(e) {
    if (e.key === 'Escape') {
      e.preventDefault();
      this.close();
      return;
    }
    if (e.key !== 'Tab') return;
    const items = this.focusables();
    if (!items.length) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  }
}

/** A form field's error in a dialog ('' clears it). */
export function fieldError(dialog, field, message) {
  const el = $(`[data-error-for=${field}]`, dialog);
  if (el) setText(el, message);
  const input = dialog.querySelector(`[name=${field}]`);
  if (input) {
    if (message) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
}

export function clearErrors(dialog) {
  for (const el of dialog.querySelectorAll('[data-error-for]')) fieldError(dialog, el.dataset.errorFor, '');
  setText($('.form-error', dialog), '');
}

/** An API refusal: on the field it names, else above the form. */
export function showApiError(dialog, err) {
  if (err.field && dialog.querySelector(`[data-error-for=${err.field}]`)) fieldError(dialog, err.field, err.message);
  else setText($('.form-error', dialog), `${err.code ? `${err.code}: ` : ''}${err.message}`);
}

/** A dialog holding one form: its modal, its toaster, and `submit()` on submit. */
export class FormModal {
  constructor(dialog, { toaster }) {
    this.dialog = dialog;
    this.modal = new Modal(dialog);
    this.toaster = toaster;
    this.form = $('form', dialog);
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
  }
}
