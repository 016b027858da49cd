// DataTable: sortable columns, empty and loading states, rows keyed by id and patched
// in place (a changed cell gets new text; an unchanged row is not touched).
import { h, setText } from '../lib/dom.js';
import { cmp, parse } from '../lib/decimal.js';
import { skeleton } from './loading.js';

function defaultCompare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'string' && typeof b === 'string' && parse(a) !== null && parse(b) !== null) return cmp(a, b);
  return String(a).localeCompare(String(b));
}

export class DataTable {
  /**
   * columns: [{key, label, num?, sortable?, value?(row), render?(row, td) → string | Node,
   *            className?(row) → string}]
   */
  constructor(root, { columns, rowKey = (r) => r.id, empty = 'Nothing here yet.', caption = null, sort = null }) {
    this.root = root;
    this.columns = columns;
    this.rowKey = rowKey;
    this.emptyText = empty;
    this.rows = [];
    this.sort = sort; // {key, dir: 1 | -1}
    this.trs = new Map();
    this.table = h('table.data');
    if (caption) this.table.append(h('caption.visually-hidden', { text: caption }));
    const headRow = h('tr');
    for (const col of columns) {
      const th = h('th', { scope: 'col', className: col.num ? 'num' : '' });
      if (col.sortable) {
        const btn = h('button', { type: 'button' }, col.label);
        btn.addEventListener('click', () => this.sortBy(col.key));
        th.append(btn);
        th.setAttribute('aria-sort', 'none');
      } else {
        th.textContent = col.label;
      }
      col.th = th;
      headRow.append(th);
    }
    this.thead = h('thead', {}, headRow);
    this.tbody = h('tbody');
    this.table.append(this.thead, this.tbody);
    this.wrap = h('div.table-wrap', {}, this.table);
    root.replaceChildren(this.wrap);
    this.updateSortHeaders();
    this.setLoading(true);
  }

  setLoading(loading) {
    this.loading = loading;
    if (loading && !this.rows.length) {
      const td = h('td', { colspan: String(this.columns.length) }, skeleton(3));
      this.tbody.replaceChildren(h('tr.loading', {}, td));
      this.trs.clear();
      this.table.setAttribute('aria-busy', 'true');
    } else {
      this.table.removeAttribute('aria-busy');
      if (!loading) this.render();
    }
  }

  sortBy(key) {
    if (this.sort && this.sort.key === key) this.sort = { key, dir: -this.sort.dir };
    else this.sort = { key, dir: 1 };
    this.updateSortHeaders();
    this.render();
  }

  updateSortHeaders() {
    for (const col of this.columns) {
      if (!col.sortable) continue;
      const state = this.sort && this.sort.key === col.key ? (this.sort.dir > 0 ? 'ascending' : 'descending') : 'none';
      col.th.setAttribute('aria-sort', state);
    }
  }

  setRows(rows) {
    this.rows = rows.slice();
    this.loading = false;
    this.table.removeAttribute('aria-busy');
    this.render();
  }

  upsert(row) {
    const key = this.rowKey(row);
    const i = this.rows.findIndex((r) => this.rowKey(r) === key);
    if (i >= 0) this.rows[i] = row;
    else this.rows.unshift(row);
    this.render();
  }

  remove(key) {
    const before = this.rows.length;
    this.rows = this.rows.filter((r) => this.rowKey(r) !== key);
    if (this.rows.length !== before) this.render();
  }

  append(rows) {
    const have = new Set(this.rows.map(this.rowKey));
    for (const r of rows) if (!have.has(this.rowKey(r))) this.rows.push(r);
    this.render();
  }

  sorted() {
    if (!this.sort) return this.rows;
    const col = this.columns.find((c) => c.key === this.sort.key);
    const value = col.value || ((r) => r[col.key]);
    return this.rows.slice().sort((a, b) => this.sort.dir * defaultCompare(value(a), value(b)));
  }

  render() {
    if (this.loading && !this.rows.length) return;
    const rows = this.sorted();
    if (!rows.length) {
      this.trs.clear();
      this.tbody.replaceChildren(
        h('tr.empty', {}, h('td', { colspan: String(this.columns.length), text: this.emptyText })),
      );
      return;
    }
    const seen = new Set();
    let prev = null;
    for (const row of rows) {
      const key = String(this.rowKey(row));
      seen.add(key);
      let tr = this.trs.get(key);
      if (!tr) {
        tr = h('tr', { dataset: { key } });
        for (const col of this.columns) tr.append(h('td', { className: col.num ? 'num' : '' }));
        this.trs.set(key, tr);
      }
      this.patchRow(tr, row);
      const want = prev ? prev.nextSibling : this.tbody.firstChild;
      if (want !== tr) this.tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const [key, tr] of this.trs) {
      if (!seen.has(key)) {
        tr.remove();
        this.trs.delete(key);
      }
    }
    while (prev && prev.nextSibling) prev.nextSibling.remove();
  }

  patchRow(tr, row) {
    this.columns.forEach((col, i) => {
      const td = tr.children[i];
      const out = col.render ? col.render(row, td) : row[col.key];
      if (out instanceof Node) {
        if (td.firstChild !== out) td.replaceChildren(out);
      } else if (out !== undefined) {
        setText(td, out === null ? '—' : String(out));
      }
      if (col.className) {
        const cls = [col.num ? 'num' : '', col.className(row) || ''].join(' ').trim();
        if (td.className !== cls) td.className = cls;
      }
    });
  }
}
