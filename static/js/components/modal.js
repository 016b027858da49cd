// Modal on <dialog>: showModal() makes the page behind it inert; Tab and Shift+Tab
// cycle inside it, Esc closes it, and focus returns to what opened it.

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
