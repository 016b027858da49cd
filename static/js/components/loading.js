// LoadingSpinner and SkeletonLoader.
import { h } from '../lib/dom.js';

export function spinner(label = 'Loading') {
  return h('span.spinner', { role: 'status', 'aria-label': label });
}

export function skeleton(lines = 3) {
  const box = h('div', { 'aria-hidden': 'true' });
  for (let i = 0; i < lines; i++) box.append(h('span.skeleton', { style: `width:${90 - ((i * 17) % 40)}%` }));
  return box;
}

/** A placeholder where a figure will be, until it is known. */
export function skeletonNumber() {
  return h('span.skeleton.skeleton-num', { 'aria-hidden': 'true' });
}

/** Buttons: disable while a request is under way, with a spinner; returns restore(). */
export function busy(button, label = null) {
  const before = button.innerHTML;
  const wasDisabled = button.disabled;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  button.replaceChildren(spinner(), document.createTextNode(` ${label || button.textContent.trim()}`));
  return () => {
    button.innerHTML = before;
    button.disabled = wasDisabled;
    button.removeAttribute('aria-busy');
  };
}
