// Every call the UI makes goes through here: the key as a Bearer token, errors turned into
// ApiError with the API's own message (OpenAI's error shape), streams read as server-sent events.
import { getKey, getRights, setRights } from './session.js';

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(json) {
  const result = {};
  const key = getKey();
  if (key) result.Authorization = `Bearer ${key}`;
  if (json) result['Content-Type'] = 'application/json';
  return result;
}

export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') params.append(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let code;
  try {
    const body = await response.json();
    message = body?.error?.message || body?.detail || message;
    code = body?.error?.code;
  } catch {
    // Not JSON (a proxy's page, say): the status line says enough.
  }
  if (response.status === 401 && getRights()) setRights(null); // the key stopped working
  return new ApiError(response.status, message, code);
}

// `key` overrides the stored key (to try one before keeping it).
export async function api(path, { method = 'GET', body, query, signal, key, text } = {}) {
  const init = { method, headers: headers(body !== undefined), signal };
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(withQuery(path, query), init);
  if (!response.ok) throw await failure(response);
  return text ? response.text() : response.json();
}

// POSTs a multipart form (a FormData: files and fields), answered as JSON or text.
export async function apiForm(path, form, { text } = {}) {
  const response = await fetch(path, { method: 'POST', headers: headers(false), body: form });
  if (!response.ok) throw await failure(response);
  return text ? response.text() : response.json();
}

// POSTs `body` as JSON, answered with a file: its Blob, and the milliseconds until its first
// bytes and until its end (the speech route streams the audio as it is made).
export async function apiFile(path, body) {
  const started = performance.now();
  const response = await fetch(path, { method: 'POST', headers: headers(true), body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const parts = [];
  let firstMs = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (firstMs === null) firstMs = performance.now() - started;
    parts.push(value);
  }
  const type = response.headers.get('content-type') || 'application/octet-stream';
  return { blob: new Blob(parts, { type }), firstMs, totalMs: performance.now() - started };
}

// POSTs `body` and yields each event's parsed data until `data: [DONE]`.
export async function* streamEvents(path, body, signal) {
  const response = await fetch(path, {
    method: 'POST', headers: headers(true), body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split('\n').filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart()).join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      const parsed = JSON.parse(data);
      if (parsed.error) throw new ApiError(500, parsed.error.message || 'stream failed', parsed.error.code);
      yield parsed;
    }
  }
}
