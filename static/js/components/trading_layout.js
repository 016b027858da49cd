// TradingLayout: three columns on desktops, two on tablets, and on phones one panel at
// a time behind a tab bar. Panels are the same nodes in every layout.
import { Tabs } from './tabs.js';

export class TradingLayout extends EventTarget {
  constructor(root, tablist) {
    super();
    this.root = root;
    this.panels = Array.from(root.querySelectorAll(':scope > [data-panel]'));
    this.tabs = new Tabs(tablist, { panels: this.panels });
    this.tabs.addEventListener('select', (e) => this.show(e.detail));
    this.narrow = window.matchMedia('(max-width: 767px)');
    this.narrow.addEventListener('change', () => this.apply());
    this.tabs.select('chart');
    this.apply();
  }

  show(name) {
    for (const p of this.panels) {
      p.classList.toggle('active', p.dataset.panel === name);
    }
    this.dispatchEvent(new CustomEvent('panel', { detail: name }));
  }

  apply() {
    // On a phone the hidden panels leave the accessibility tree with display:none; on
    // wider screens every panel shows and the tab bar is not rendered at all.
    for (const p of this.panels) {
      if (this.narrow.matches) p.setAttribute('role', 'tabpanel');
      else p.removeAttribute('role');
    }
  }

  select(name) {
    this.tabs.select(name);
  }
}
