// fetch() for the REST API with the session cookie and CSRF token; refusals become
// ApiError with the contract's stable code, field and retryAfter.

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || (status >= 500 ? 'SERVER_ERROR' : 'HTTP_' + status);
    this.field = e.field || null;
    this.retryAfter = e.retryAfter ?? null;
    this.body = body;
  }
}

export function cookie(name) {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return null;
}

export async function api(method, path, body = undefined, { query = null } = {}) {
  let url = `/api/v1/${path}`;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  const headers = { Accept: 'application/json' };
  const csrf = cookie('csrftoken');
  if (csrf) headers['X-CSRFToken'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, { error: { code: 'NETWORK', message: 'The server could not be reached.' } });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, query) => api('GET', path, undefined, { query });
export const post = (path, body = {}) => api('POST', path, body);
export const del = (path, query) => api('DELETE', path, undefined, { query });
