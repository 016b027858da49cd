// Tooltip for any element with data-tooltip: shown on hover and keyboard focus, tied
// to the element with aria-describedby, hidden with Esc.

let tip = null;
let counter = 0;

function ensureTip() {
  if (!tip) {
    tip = document.createElement('div');
    tip.className = 'tooltip';
    tip.setAttribute('role', 'tooltip');
    tip.id = 'tooltip';
    tip.hidden = true;
    document.body.append(tip);
  }
  return tip;
}

function show(el) {
  const t = ensureTip();
  t.textContent = el.dataset.tooltip;
  t.hidden = false;
  el.setAttribute('aria-describedby', t.id);
  const r = el.getBoundingClientRect();
  const w = t.offsetWidth;
  const left = Math.max(8, Math.min(window.innerWidth - w - 8, r.left + r.width / 2 - w / 2));
  const below = r.bottom + 8 + t.offsetHeight < window.innerHeight;
  t.style.left = `${left}px`;
  t.style.top = `${below ? r.bottom + 8 : r.top - t.offsetHeight - 8}px`;
}

function hide(el) {
  if (tip) tip.hidden = true;
  if (el) el.removeAttribute('aria-describedby');
}

export function installTooltips(root = document) {
  root.addEventListener('mouseover', (e) => {
    const el = e.target.closest('[data-tooltip]');
    if (el) show(el);
  });
  root.addEventListener('mouseout', (e) => {
    const el = e.target.closest('[data-tooltip]');
    if (el) hide(el);
  });
  root.addEventListener('focusin', (e) => {
    const el = e.target.closest('[data-tooltip]');
    if (el) show(el);
  });
  root.addEventListener('focusout', (e) => {
    const el = e.target.closest('[data-tooltip]');
    if (el) hide(el);
  });
  root.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && tip && !tip.hidden) hide(document.activeElement);
  });
  counter += 1;
}
