// MarketSelector: a searchable list (combobox pattern). Type to filter; arrows move;
// Enter picks; Esc closes and returns focus to the button.
import { h, setText } from '../lib/dom.js';
import { format } from '../lib/decimal.js';

export class MarketSelector extends EventTarget {
  constructor(root, markets) {
    super();
    this.root = root;
    this.markets = markets;
    this.button = root.querySelector('button[aria-haspopup]');
    this.popup = root.querySelector('.popup');
    this.input = root.querySelector('input[type=search]');
    this.list = root.querySelector('ul');
    this.active = 0;
    this.button.addEventListener('click', () => (this.popup.hidden ? this.open() : this.close()));
    this.input.addEventListener('input', () => {
      this.active = 0;
      this.render();
    });
    this.input.addEventListener('keydown', (e) => this.onKey(e));
    this.list.addEventListener('click', (e) => {
      const li = e.target.closest('li[data-symbol]');
      if (li) this.pick(li.dataset.symbol);
    });
    document.addEventListener('click', (e) => {
      if (!this.popup.hidden && !root.contains(e.target)) this.close(false);
    });
  }

  set(symbol) {
    this.symbol = symbol;
    setText(this.button.querySelector('.label'), symbol);
  }

  filtered() {
    const q = this.input.value.trim().toUpperCase();
    return this.markets.filter((m) => !q || m.symbol.includes(q) || m.kind.includes(q) || m.base.includes(q));
  }

  open() {
    this.popup.hidden = false;
    this.button.setAttribute('aria-expanded', 'true');
    this.input.value = '';
    this.active = Math.max(0, this.filtered().findIndex((m) => m.symbol === this.symbol));
    this.render();
    this.input.focus();
  }

  close(focus = true) {
    this.popup.hidden = true;
    this.button.setAttribute('aria-expanded', 'false');
    this.input.removeAttribute('aria-activedescendant');
    if (focus) this.button.focus();
  }

  render() {
    const items = this.filtered();
    this.list.replaceChildren(
      ...items.map((m, i) =>
        h(
          'li',
          { role: 'option', id: `mkt-opt-${i}`, 'aria-selected': String(i === this.active), dataset: { symbol: m.symbol } },
          h('span', {}, h('strong', { text: m.symbol }), ' ', h('span.k', { text: m.kind })),
          h('span.num', { text: format(m.lastPrice || m.markPrice || m.indexPrice) }),
        ),
      ),
    );
    if (!items.length) this.list.append(h('li.muted', { role: 'option', 'aria-disabled': 'true' }, 'No market matches'));
    if (items.length) {
      this.input.setAttribute('aria-activedescendant', `mkt-opt-${this.active}`);
      this.list.children[this.active].scrollIntoView({ block: 'nearest' });
    }
  }

  onKey(e) {
    const items = this.filtered();
    if (e.key === 'ArrowDown') {
      e.preventDefault();
      this.active = Math.min(items.length - 1, this.active + 1);
      this.render();
    } else if (e.key === 'ArrowUp') {
      e.preventDefault();
      this.active = Math.max(0, this.active - 1);
      this.render();
    } else if (e.key === 'Enter') {
      e.preventDefault();
      if (items[this.active]) this.pick(items[this.active].symbol);
    } else if (e.key === 'Escape') {
      e.preventDefault();
      this.close();
    }
  }

  pick(symbol) {
    this.close();
    if (symbol !== this.symbol) {
      this.set(symbol);
      this.dispatchEvent(new CustomEvent('change', { detail: symbol }));
    }
  }
}
