// NotificationToaster: short messages in a polite live region; errors are assertive.
import { h } from '../lib/dom.js';

export class Toaster {
  constructor(root) {
    this.root = root;
    this.seen = new Map();
  }

  /** kind: info | success | error | warning. A `key` is shown once (an order's
   * acceptance may be told by the REST response and by the socket). */
  show({ title, message = '', kind = 'info', key = null, timeout = null }) {
    // Errors stay long enough to be read; other notices go sooner.
    const shown = timeout ?? (kind === 'error' || kind === 'warning' ? 8000 : 4000);
    if (key) {
      if (this.seen.has(key)) return null;
      this.seen.set(key, Date.now());
      if (this.seen.size > 1000) this.seen.delete(this.seen.keys().next().value);
    }
    const close = h('button.icon-btn', { type: 'button', 'aria-label': 'Dismiss notification' }, '×');
    const toast = h(
      'div.toast',
      { role: kind === 'error' ? 'alert' : 'status', dataset: { kind } },
      h('div.body', {}, h('span.title', { text: title }), message ? h('span', { text: message }) : null),
      close,
    );
    const remove = () => toast.remove();
    close.addEventListener('click', remove);
    this.root.append(toast);
    // At most three at once; two on a phone, where they sit over the header.
    const most = window.matchMedia('(max-width: 767px)').matches ? 2 : 3;
    while (this.root.children.length > most) this.root.firstElementChild.remove();
    if (shown) setTimeout(remove, shown);
    return toast;
  }
}
