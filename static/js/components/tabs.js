// Tabs (WAI-ARIA tabs pattern): arrows move between tabs, Home/End jump.
export class Tabs extends EventTarget {
  constructor(tablist, { panels = null } = {}) {
    super();
    this.tablist = tablist;
    this.tabs = Array.from(tablist.querySelectorAll('[role=tab]'));
    this.panels = panels;
    for (const tab of this.tabs) {
      tab.addEventListener('click', () => this.select(tab.dataset.tab));
      tab.addEventListener('keydown', (e) => this.onKey(e, tab));
    }
  }

  panelFor(tab) {
    return document.getElementById(tab.getAttribute('aria-controls'));
  }

  select(name, focus = false) {
    for (const tab of this.tabs) {
      const on = tab.dataset.tab === name;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
      const panel = this.panelFor(tab);
      if (panel && !this.panels) panel.hidden = !on;
    }
    this.current = name;
    this.dispatchEvent(new CustomEvent('select', { detail: name }));
  }

  onKey(e, tab) {
    const i = this.tabs.indexOf(tab);
    let next = null;
    if (e.key === 'ArrowRight') next = this.tabs[(i + 1) % this.tabs.length];
    else if (e.key === 'ArrowLeft') next = this.tabs[(i - 1 + this.tabs.length) % this.tabs.length];
    else if (e.key === 'Home') next = this.tabs[0];
    else if (e.key === 'End') next = this.tabs.at(-1);
    if (next) {
      e.preventDefault();
      this.select(next.dataset.tab, true);
    }
  }
}
