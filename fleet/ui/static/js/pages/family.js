// One family of the catalogue: its variants, the engines that can run it (and why the others
// cannot), and the launch form with its "will it fit" estimate.
import { api } from '../api.js';
import { LaunchForm } from '../components/launch_form.js';
import { Chips, ErrorBox, Loading } from '../components/ui.js';
import { describeFamily, sizeLabel } from '../catalogue_data.js';
import { useLoad } from '../hooks.js';
import { html } from '../html.js';
import { can } from '../session.js';

const FACTS = [['context_length', 'Context length'], ['dimensions', 'Dimensions'],
  ['max_tokens', 'Max tokens'], ['model_lang', 'Languages'], ['language', 'Languages'],
  ['model_family', 'Family']];

function Facts({ type, family }) {
  const abilities = describeFamily(type, family).abilities;
  return html`<dl class="facts">
    ${FACTS.filter(([key]) => family[key] !== undefined && family[key] !== null).map(([key, label]) => html`
      <dt>${label}</dt><dd>${Array.isArray(family[key]) ? family[key].join(', ') : String(family[key])}</dd>`)}
    <dt>Abilities</dt><dd><${Chips} items=${abilities}/></dd>
    <dt>Source</dt><dd>${family.is_builtin === false ? 'custom registration' : 'built in'}</dd>
  </dl>`;
}

function Variants({ family }) {
  return html`<div class="table-wrap"><table>
    <thead><tr><th>Format</th><th>Size</th><th>Quantizations</th><th>Hub id / path</th></tr></thead>
    <tbody>${(family.model_specs || []).map((spec) => html`<tr>
      <td>${spec.model_format}</td><td>${sizeLabel(spec.model_size_in_billions)}</td>
      <td>${(spec.quantizations || []).join(', ')}</td>
      <td class="small">${spec.model_uri || spec.model_id || ''}</td></tr>`)}</tbody>
  </table></div>`;
}

function Engines({ engines }) {
  return html`<div class="table-wrap"><table data-testid="engine-matrix">
    <thead><tr><th>Engine</th><th>Can run it</th><th>Formats</th></tr></thead>
    <tbody>${engines.map((e) => html`<tr>
      <td>${e.engine}${e.needs_gpu ? ' (GPU)' : ''}</td>
      <td>${e.available ? html`<span class="ok-text">yes</span>` : html`<span class="error-text">no: ${e.reason}</span>`}</td>
      <td>${e.formats.join(', ')}</td></tr>`)}</tbody>
  </table></div>`;
}

export default function FamilyPage({ type, name }) {
  const path = `${encodeURIComponent(type)}/${encodeURIComponent(name)}`;
  const family = useLoad(() => api(`/v1/model_registrations/${path}`), [path]);
  const engines = useLoad(() => api(`/v1/engines/${path}`, { query: { detailed: true } }), [path]);
  const error = family.error || engines.error;
  if (error) return html`<${ErrorBox} error=${error}/>`;
  if (!family.data || !engines.data) return html`<${Loading} what=${name}/>`;
  const rows = engines.data.engines;
  return html`<div>
    <p class="small"><a href="/ui/catalogue">Catalogue</a> / ${type}</p>
    <h1>${name}</h1>
    <p>${family.data.model_description}</p>
    <div class="two">
      <section class="card"><h2>Facts</h2><${Facts} type=${type} family=${family.data}/></section>
      <section class="card"><h2>Engines</h2><${Engines} engines=${rows}/></section>
    </div>
    <section class="card"><h2>Variants</h2><${Variants} family=${family.data}/></section>
    ${can('models:start')
      ? html`<${LaunchForm} type=${type} family=${family.data} engines=${rows}/>`
      : html`<p class="notice">This API key may not launch models (that needs <code>models:start</code>).</p>`}
  </div>`;
}
