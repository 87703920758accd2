// Launched models, refreshed every 3 s: state (an idle one is listed, unloaded until its next
// request), replicas, engine, and links to each one's page and playground.
import { api } from '../api.js';
import { ErrorBox, Loading, StateBadge } from '../components/ui.js';
import { usePoll } from '../hooks.js';
import { html } from '../html.js';
import { href } from '../navigation.js';
import { can } from '../session.js';

const REFRESH_MS = 3000;

export default function ModelsPage() {
  const { data, error } = usePoll(() => api('/v1/models'), REFRESH_MS);
  if (!data) return error ? html`<${ErrorBox} error=${error}/>` : html`<${Loading} what="models"/>`;
  const models = data.data.filter((m) => !m.alias_of); // an alias is listed as its model
  return html`<div>
    <div class="row spread"><h1>Models</h1>
      ${can('models:start') ? html`<a class="button primary" href="/ui/catalogue">Launch a model</a>` : null}</div>
    ${error ? html`<${ErrorBox} error=${error} title="Live updates stopped:"/>` : null}
    ${models.length === 0 ? html`<p class="muted">No model is running.</p>` : html`
    <div class="table-wrap"><table data-testid="models-table">
      <thead><tr><th>Uid</th><th>Model</th><th>Type</th><th>Engine</th><th>State</th>
        <th class="num">Replicas</th><th></th></tr></thead>
      <tbody>${models.map((m) => html`<tr data-uid=${m.id}>
        <td><a href=${href('models', m.id)}>${m.id}</a>
          ${(m.aliases || []).length ? html`<div class="small muted">also ${m.aliases.join(', ')}</div>` : null}</td>
        <td>${m.model_name}<div class="small muted">${m.model_format} · ${m.quantization}</div></td>
        <td>${m.model_type}</td><td>${m.model_engine}</td>
        <td><${StateBadge} state=${m.status}/>
          ${m.status === 'idle' ? html`<div class="small muted">unloaded; its next request loads it</div>` : null}
          ${m.error ? html`<div class="small error-text">${m.error}</div>` : null}</td>
        <td class="num">${m.ready_replicas}/${m.replica}</td>
        <td><a href=${href('playground', m.id)}>Playground</a></td>
      </tr>`)}</tbody>
    </table></div>`}
  </div>`;
}
