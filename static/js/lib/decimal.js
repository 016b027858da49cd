// Decimal strings without floats. Money, prices and quantities arrive as decimal
// strings ("64523.5") and are only ever added, compared, multiplied and shown here as
// BigInt scaled integers: { n: BigInt, s: number } means n / 10^s.

const PATTERN = /^([+-]?)(\d*)(?:\.(\d*))?$/;

export function parse(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === 'object' && typeof value.n === 'bigint') return value;
  const text = String(value).trim();
  const m = PATTERN.exec(text);
  if (!m || (m[2] === '' && (m[3] === undefined || m[3] === ''))) return null;
  const frac = m[3] || '';
  const n = BigInt((m[2] || '0') + frac);
  return { n: m[1] === '-' ? -n : n, s: frac.length };
}

function must(value) {
  const d = parse(value);
  if (d === null) throw new TypeError(`not a decimal: ${value}`);
  return d;
}

const POW = [1n];
function pow10(k) {
  while (POW.length <= k) POW.push(POW[POW.length - 1] * 10n);
  return POW[k];
}

function align(a, b) {
  if (a.s === b.s) return [a.n, b.n, a.s];
  if (a.s > b.s) return [a.n, b.n * pow10(a.s - b.s), a.s];
  return [a.n * pow10(b.s - a.s), b.n, b.s];
}

export function toString(value) {
  const d = must(value);
  let { n, s } = d;
  while (s > 0 && n % 10n === 0n) {
    n /= 10n;
    s -= 1;
  }
  const neg = n < 0n;
  let digits = (neg ? -n : n).toString();
  if (s > 0) {
    digits = digits.padStart(s + 1, '0');
    digits = `${digits.slice(0, -s)}.${digits.slice(-s)}`;
  }
  return (neg ? '-' : '') + digits;
}

export function isValid(value) {
  return parse(value) !== null;
}

export function add(a, b) {
  const [x, y, s] = align(must(a), must(b));
  return toString({ n: x + y, s });
}

export function sub(a, b) {
  const [x, y, s] = align(must(a), must(b));
  return toString({ n: x - y, s });
}

export function mul(a, b) {
  const x = must(a);
  const y = must(b);
  return toString({ n: x.n * y.n, s: x.s + y.s });
}

export function cmp(a, b) {
  const [x, y] = align(must(a), must(b));
  return x < y ? -1 : x > y ? 1 : 0;
}

export function sign(a) {
  const d = must(a);
  return d.n < 0n ? -1 : d.n > 0n ? 1 : 0;
}

export function isZero(a) {
  return must(a).n === 0n;
}

export function neg(a) {
  const d = must(a);
  return toString({ n: -d.n, s: d.s });
}

export function abs(a) {
  const d = must(a);
  return toString({ n: d.n < 0n ? -d.n : d.n, s: d.s });
}

export function max(a, b) {
  return cmp(a, b) >= 0 ? toString(a) : toString(b);
}

export function min(a, b) {
  return cmp(a, b) <= 0 ? toString(a) : toString(b);
}

/** a / b, rounded toward negative infinity at `scale` fractional digits. */
export function divFloor(a, b, scale = 18) {
  const x = must(a);
  const y = must(b);
  if (y.n === 0n) throw new RangeError('division by zero');
  // (x.n / 10^x.s) / (y.n / 10^y.s) * 10^scale = x.n * 10^(y.s + scale) / (y.n * 10^x.s)
  let num = x.n * pow10(y.s + scale);
  let den = y.n * pow10(x.s);
  if (den < 0n) {
    num = -num;
    den = -den;
  }
  let q = num / den;
  if (num % den !== 0n && num < 0n) q -= 1n;
  return toString({ n: q, s: scale });
}

/** How many whole `step`s fit in `a` (floor), as a BigInt. */
function steps(a, step) {
  const [x, y] = align(must(a), must(step));
  if (y <= 0n) throw new RangeError('step must be positive');
  let q = x / y;
  if (x % y !== 0n && x < 0n) q -= 1n;
  return q;
}

export function isMultipleOf(a, step) {
  const [x, y] = align(must(a), must(step));
  return y !== 0n && x % y === 0n;
}

export function floorToStep(a, step) {
  const st = must(step);
  return toString({ n: steps(a, step) * st.n, s: st.s });
}

export function ceilToStep(a, step) {
  const floor = floorToStep(a, step);
  return cmp(floor, a) === 0 ? floor : add(floor, step);
}

/** Fractional digits a step needs: "0.5" → 1, "0.001" → 3, "5" → 0. */
export function decimalsOf(step) {
  const text = toString(step);
  const dot = text.indexOf('.');
  return dot < 0 ? 0 : text.length - dot - 1;
}

/** Round half away from zero to `dp` fractional digits, as a string with exactly `dp`. */
export function toFixed(value, dp) {
  const d = must(value);
  let n = d.n;
  if (d.s > dp) {
    const div = pow10(d.s - dp);
    const r = n % div;
    n /= div;
    const twice = (r < 0n ? -r : r) * 2n;
    if (twice >= div) n += n < 0n || (n === 0n && d.n < 0n) ? -1n : 1n;
  } else {
    n *= pow10(dp - d.s);
  }
  const negative = n < 0n;
  let digits = (negative ? -n : n).toString();
  if (dp > 0) {
    digits = digits.padStart(dp + 1, '0');
    digits = `${digits.slice(0, -dp)}.${digits.slice(-dp)}`;
  }
  return (negative ? '-' : '') + digits;
}

function group(intPart) {
  return intPart.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/**
 * A decimal string for people: `dp` fixed digits (or as given), thousands grouped,
 * `plus` to sign positives. null/undefined/'' → the placeholder.
 */
export function format(value, { dp = null, grouping = true, plus = false, placeholder = '—' } = {}) {
  if (value === null || value === undefined || value === '') return placeholder;
  if (parse(value) === null) return placeholder;
  const text = dp === null ? toString(value) : toFixed(value, dp);
  const negative = text.startsWith('-');
  const body = negative ? text.slice(1) : text;
  const [i, f] = body.split('.');
  const out = (grouping ? group(i) : i) + (f !== undefined ? `.${f}` : '');
  const isZeroText = /^[0.]*$/.test(body);
  if (negative && !isZeroText) return `-${out}`;
  if (plus && !isZeroText && !negative) return `+${out}`;
  return out;
}

/** 1234567.8 → "1.23M"; for volumes and open interest. */
export function compact(value, { dp = 2, placeholder = '—' } = {}) {
  if (value === null || value === undefined || parse(value) === null) return placeholder;
  const units = [
    ['1000000000000', 'T'],
    ['1000000000', 'B'],
    ['1000000', 'M'],
    ['1000', 'K'],
  ];
  const a = abs(value);
  for (const [size, suffix] of units) {
    if (cmp(a, size) >= 0) {
      return format(divFloor(value, size, dp + 2), { dp }) + suffix;
    }
  }
  return format(value, { dp });
}

/** a / b as a JavaScript number in [0, 1]: for CSS widths only, never for money. */
export function ratio(a, b) {
  if (cmp(b, '0') <= 0) return 0;
  const r = Number(divFloor(a, b, 6));
  return Math.max(0, Math.min(1, r));
}
