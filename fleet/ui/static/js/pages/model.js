// One running model: what it is, how it was launched, its replicas (scale up and down), its
// autoscaling and keep_alive (changed here) with what the supervisor did on its own and why,
// links to its playground and metrics, and terminate (after a confirmation).
import { api } from '../api.js';
import { AutoscalePanel } from '../components/autoscale.js';
import { ModelEvents } from '../components/model_events.js';
import { ConfirmDialog, ErrorBox, Json, Loading, ProgressBar, StateBadge } from '../components/ui.js';
import { bytes, duration, when } from '../format.js';
import { usePoll } from '../hooks.js';
import { html, useState } from '../html.js';
import { href, navigate } from '../navigation.js';
import { can } from '../session.js';

const REFRESH_MS = 3000;

function Facts({ model }) {
  const rows = [['Model', model.model_name], ['Type', model.model_type],
    ['Engine', `${model.model_engine} (${model.model_engine_reason || 'requested'})`],
    ['Format', `${model.model_format} · ${model.quantization}`],
    ['Memory per replica', model.memory_estimate?.summary || 'not estimated'],
    ['Launched', when(model.created)], ['Abilities', (model.model_ability || []).join(', ')]];
  if (model.context_length) rows.push(['Context length', model.context_length]);
  if (model.dimensions) rows.push(['Dimensions', model.dimensions]);
  return html`<dl class="facts">${rows.map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}</dl>`;
}

function Replicas({ uid, replicas, onChange }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const act = async (request) => {
    setBusy(true);
    setError(null);
    try { await request(); onChange(); } catch (caught) { setError(caught); } finally { setBusy(false); }
  };
  const base = `/v1/models/${encodeURIComponent(uid)}/replicas`;
  const add = () => act(() => api(base, { method: 'POST', body: { replica: 1 } }));
  const remove = (id) => act(() => api(`${base}/${id}`, { method: 'DELETE' }));
  return html`<section class="card">
    <div class="row spread"><h2>Replicas</h2>
      ${can('models:start') ? html`<button type="button" onClick=${add} disabled=${busy}>
        ${busy ? 'Working…' : 'Add a replica'}</button>` : null}</div>
    <${ErrorBox} error=${error}/>
    <div class="table-wrap"><table data-testid="replicas">
      <thead><tr><th>Replica</th><th>Worker</th><th>State</th><th class="num">Restarts</th>
        <th class="num">Memory</th><th class="num">Uptime</th><th class="num">Served</th><th>Pid</th><th></th></tr></thead>
      <tbody>${replicas.map((r) => html`<tr>
        <td>${r.replica_uid}</td><td>${r.worker_address}</td>
        <td><${StateBadge} state=${r.state}/>
          ${r.state !== 'ready' && r.progress < 1 ? html`<${ProgressBar} value=${r.progress} label=${r.stage}/>` : null}
          ${r.error || r.last_failure ? html`<div class="small error-text">${r.error || r.last_failure}</div>` : null}</td>
        <td class="num">${r.restarts}</td><td class="num">${bytes(r.memory_bytes)}</td>
        <td class="num">${duration(r.uptime_s)}</td><td class="num">${r.requests_served ?? '–'}</td>
        <td>${r.pid ?? '–'}</td>
        <td>${can('models:stop') && replicas.length > 1 ? html`<button type="button" class="small"
          onClick=${() => remove(r.replica_id)} disabled=${busy}>Remove</button>` : null}</td>
      </tr>`)}</tbody>
    </table></div>
  </section>`;
}

function Terminate({ uid, onEnding }) {
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState(null);
  const confirm = async () => {
    setAsking(false);
    onEnding(true); // stop asking about a model that is going away
    try {
      await api(`/v1/models/${encodeURIComponent(uid)}`, { method: 'DELETE' });
      navigate('/ui/models');
    } catch (caught) {
      onEnding(false);
      setError(caught);
    }
  };
  return html`<span>
    <button type="button" class="danger" onClick=${() => setAsking(true)}>Terminate</button>
    <${ErrorBox} error=${error}/>
    <${ConfirmDialog} open=${asking} title=${`Terminate ${uid}?`} confirmLabel="Terminate"
      onConfirm=${confirm} onCancel=${() => setAsking(false)}>
      <p>Its replicas finish the requests they have, then their processes end and their memory
        is freed. Clients calling <code>${uid}</code> will get 404s.</p>
    </${ConfirmDialog}>
  </span>`;
}

export default function ModelPage({ uid }) {
  const path = `/v1/models/${encodeURIComponent(uid)}`;
  const [ending, setEnding] = useState(false);
  const every = ending ? null : REFRESH_MS;
  const model = usePoll(() => api(path), every, [uid, ending]);
  const replicas = usePoll(() => api(`${path}/replicas`), every, [uid, ending]);
  if (model.error?.status === 404) {
    return html`<div><h1>${uid}</h1><p>This model is not running. <a href="/ui/models">Running models</a></p></div>`;
  }
  if (!model.data) return model.error ? html`<${ErrorBox} error=${model.error}/>` : html`<${Loading} what=${uid}/>`;
  const m = model.data;
  const refresh = () => { model.refresh(); replicas.refresh(); };
  return html`<div>
    <p class="small"><a href="/ui/models">Models</a></p>
    <div class="row spread">
      <h1>${uid} <${StateBadge} state=${m.status}/></h1>
      <div class="row">
        <a class="button primary" href=${href('playground', uid)}>Playground</a>
        ${can('metrics:read') ? html`<a class="button" href=${`/ui/metrics?model=${encodeURIComponent(uid)}`}>Metrics</a>` : null}
        ${can('models:stop') ? html`<${Terminate} uid=${uid} onEnding=${setEnding}/>` : null}
      </div>
    </div>
    ${m.error ? html`<${ErrorBox} error=${m.error}/>` : null}
    <div class="two">
      <section class="card"><h2>About</h2><${Facts} model=${m}/></section>
      <section class="card"><h2>Launch options</h2><${Json} value=${m.launch_options || {}}/></section>
    </div>
    <${Replicas} uid=${uid} replicas=${replicas.data || m.replicas} onChange=${refresh}/>
    <${AutoscalePanel} uid=${uid} model=${m} onChange=${refresh}/>
    <${ModelEvents} uid=${uid} every=${every}/>
  </div>`;
}
