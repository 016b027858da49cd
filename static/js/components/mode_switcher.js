// ModeSwitcher: REAL / PAPER, two separate worlds.
export class ModeSwitcher extends EventTarget {
  constructor(root) {
    super();
    this.root = root;
    this.buttons = Array.from(root.querySelectorAll('[data-mode]'));
    for (const b of this.buttons) b.addEventListener('click', () => this.choose(b.dataset.mode));
  }

  set(mode) {
    this.mode = mode;
    for (const b of this.buttons) b.setAttribute('aria-pressed', String(b.dataset.mode === mode));
  }

  choose(mode) {
    if (mode === this.mode) return;
    this.set(mode);
    this.dispatchEvent(new CustomEvent('change', { detail: mode }));
  }
}
