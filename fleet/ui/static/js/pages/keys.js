// API keys for admins: every key (those of --api-key and --auth-config read-only), a form that
// makes one (shown once, here, then never again), revoking one, and the latest audit entries.
// Validation is the API's: its messages are shown as they are.
import { api } from '../api.js';
import { Chips, ConfirmDialog, ErrorBox, Field, Loading } from '../components/ui.js';
import { useAction, useLoad } from '../hooks.js';
import { html, useState } from '../html.js';

const PERMISSIONS = ['models:list', 'models:read', 'models:start', 'models:stop', 'models:register',
  'models:unregister', 'cache:list', 'cache:delete', 'metrics:read', 'admin'];
const LIMITS = [['requests_per_minute', 'Requests / minute'], ['tokens_per_minute', 'Tokens / minute'],
  ['max_concurrent_requests', 'Concurrent requests'], ['daily_tokens', 'Tokens / day'],
  ['monthly_tokens', 'Tokens / month']];
const EMPTY = { name: '', owner: '', models: '', expires: '', permissions: ['models:list', 'models:read'], limits: {} };

function body(form) {
  const limits = Object.fromEntries(Object.entries(form.limits).filter(([, v]) => v !== '')
    .map(([k, v]) => [k, Number(v)]));
  const models = form.models.split(',').map((m) => m.trim()).filter(Boolean);
  return {
    name: form.name, owner: form.owner || undefined, permissions: form.permissions,
    models: models.length ? models : undefined,
    expires_at: form.expires ? new Date(form.expires).toISOString() : undefined,
    limits: Object.keys(limits).length ? limits : undefined,
  };
}

function CreateKey({ onMade }) {
  const [form, setForm] = useState(EMPTY);
  const [made, setMade] = useState(null);
  const action = useAction();
  const set = (name, value) => setForm((old) => ({ ...old, [name]: value }));
  const toggle = (p) => set('permissions', form.permissions.includes(p)
    ? form.permissions.filter((x) => x !== p) : [...form.permissions, p]);
  const submit = action.submit(async () => {
    const answer = await api('/v1/keys', { method: 'POST', body: body(form) });
    setMade(answer);
    setForm(EMPTY);
    onMade();
  });
  const input = (name, label, attrs = {}) => html`<${Field} id=${`key-${name}`} label=${label} hint=${attrs.hint}>
    <input id=${`key-${name}`} value=${form[name]} onInput=${(e) => set(name, e.target.value)} ...${attrs}/></${Field}>`;
  return html`<form class="card" onSubmit=${submit} aria-labelledby="create-key-title" data-testid="create-key">
    <h2 id="create-key-title">Make a key</h2>
    ${made ? html`<div class="notice" role="status" data-testid="new-key">
      <p>Key <strong>${made.name}</strong> (${made.id}) is shown this once: copy it now.</p>
      <pre class="json">${made.key}</pre></div>` : null}
    <div class="fields">
      ${input('name', 'Name', { required: true })}
      ${input('owner', 'Owner', { hint: 'a user or team' })}
      ${input('models', 'Models', { hint: 'model uids, comma separated; empty: every model' })}
      ${input('expires', 'Expires', { type: 'datetime-local', hint: 'empty: until revoked' })}
      <fieldset class="field"><legend class="small">Permissions</legend>
        ${PERMISSIONS.map((p) => html`<label class="row small">
          <input type="checkbox" checked=${form.permissions.includes(p)} onChange=${() => toggle(p)}/> ${p}</label>`)}
      </fieldset>
      ${LIMITS.map(([name, label]) => html`<${Field} id=${`key-${name}`} label=${label} hint="empty: no limit">
        <input id=${`key-${name}`} type="number" min="1" value=${form.limits[name] ?? ''}
          onInput=${(e) => set('limits', { ...form.limits, [name]: e.target.value })}/></${Field}>`)}
    </div>
    <${ErrorBox} error=${action.error} title="Not made:"/>
    <div class="actions"><button type="submit" class="primary" id="create-key-button"
      disabled=${action.busy || !form.name.trim()}>${action.busy ? 'Making…' : 'Make the key'}</button></div>
  </form>`;
}

function Revoke({ entry, onDone }) {
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState(null);
  const confirm = async () => {
    setAsking(false);
    try {
      await api(`/v1/keys/${encodeURIComponent(entry.id)}`, { method: 'DELETE' });
      onDone();
    } catch (caught) {
      setError(caught);
    }
  };
  return html`<span>
    <button type="button" class="small" onClick=${() => setAsking(true)}>Revoke</button>
    <${ErrorBox} error=${error}/>
    <${ConfirmDialog} open=${asking} title=${`Revoke ${entry.name}?`} confirmLabel="Revoke"
      onConfirm=${confirm} onCancel=${() => setAsking(false)}><p>Every request with it is refused within a second.</p></${ConfirmDialog}>
  </span>`;
}

function KeyRow({ entry, onChange }) {
  const limits = Object.entries(entry.limits || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`);
  return html`<tr data-testid=${`key-${entry.id}`}>
    <td>${entry.name}${entry.owner && entry.owner !== entry.name ? html`<div class="muted small">${entry.owner}</div>` : null}</td>
    <td><code>${entry.prefix ? `${entry.prefix}…` : entry.id}</code></td>
    <td>${entry.source}</td>
    <td><${Chips} items=${entry.permissions}/></td>
    <td>${entry.models ? html`<${Chips} items=${entry.models}/>` : 'all'}</td>
    <td class="small">${limits.join(', ') || '—'}</td>
    <td class="small">${entry.expires_at ? new Date(entry.expires_at).toLocaleString() : '—'}</td>
    <td>${entry.status}</td>
    <td>${entry.read_only ? html`<span class="muted small">read-only</span>`
      : entry.status === 'active' ? html`<${Revoke} entry=${entry} onDone=${onChange}/>` : null}</td>
  </tr>`;
}

function Audit() {
  const log = useLoad(() => api('/v1/audit', { query: { limit: 20 } }), []);
  if (log.error) return html`<${ErrorBox} error=${log.error}/>`;
  if (!log.data) return html`<${Loading}/>`;
  return html`<div class="table-wrap"><table data-testid="audit">
    <thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>From</th></tr></thead>
    <tbody>${log.data.data.map((e) => html`<tr><td class="small">${new Date(e.time).toLocaleString()}</td>
      <td>${e.actor}</td><td>${e.action}</td><td>${e.target}</td><td>${e.client_address}</td></tr>`)}</tbody>
  </table></div>`;
}

export default function KeysPage() {
  const keys = useLoad(() => api('/v1/keys'), []);
  return html`<div>
    <h1>API keys</h1>
    ${keys.error ? html`<${ErrorBox} error=${keys.error}/>` : !keys.data ? html`<${Loading}/>` : html`
      ${keys.data.data.length === 0 ? html`<p>This cluster has no keys: anyone who reaches it may use it.
        Its first key must be an admin key, and turns keys on for every request.</p>` : html`
      <div class="table-wrap"><table data-testid="keys">
        <thead><tr><th>Name</th><th>Key</th><th>Source</th><th>Permissions</th><th>Models</th><th>Limits</th>
          <th>Expires</th><th>Status</th><th></th></tr></thead>
        <tbody>${keys.data.data.map((entry) => html`<${KeyRow} entry=${entry} onChange=${keys.refresh}/>`)}</tbody>
      </table></div>`}`}
    <${CreateKey} onMade=${keys.refresh}/>
    <h2>Audit log</h2>
    <${Audit} key=${keys.data ? keys.data.data.length : 0}/>
  </div>`;
}
