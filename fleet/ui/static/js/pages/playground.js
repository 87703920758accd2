// /ui/playground/{uid}[/{kind}]: the playgrounds of one model, as tabs with their own URLs.
import { api } from '../api.js';
import { ErrorBox, Loading, StateBadge } from '../components/ui.js';
import { useLoad } from '../hooks.js';
import { html, useEffect, useState } from '../html.js';
import { href } from '../navigation.js';
import { can } from '../session.js';
import { playgroundsFor } from '../playgrounds/registry.js';

function Loaded({ playground, model }) {
  const [module, setModule] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setModule(null);
    playground.load().then(setModule, setError);
  }, [playground.kind]);
  if (error) return html`<${ErrorBox} error=${error}/>`;
  if (!module) return html`<${Loading}/>`;
  const Component = module.default;
  return html`<${Component} model=${model}/>`;
}

export default function PlaygroundPage({ uid, kind }) {
  const model = useLoad(() => api(`/v1/models/${encodeURIComponent(uid)}`), [uid]);
  if (model.error) return html`<${ErrorBox} error=${model.error}/>`;
  if (!model.data) return html`<${Loading} what=${uid}/>`;
  const m = model.data;
  const playgrounds = playgroundsFor(m);
  const chosen = playgrounds.find((p) => p.kind === kind) || playgrounds[0];
  return html`<div>
    <p class="small"><a href="/ui/models">Models</a> / <a href=${href('models', uid)}>${uid}</a></p>
    <h1>Playground: ${uid} <${StateBadge} state=${m.status}/></h1>
    ${!can('models:read') ? html`<p class="notice">This API key may not call models (that needs <code>models:read</code>).</p>` : null}
    ${playgrounds.length === 0 ? html`<p class="notice">No playground for ${m.model_type} models yet.</p>` : html`
      <nav class="tabs" aria-label="Playgrounds">${playgrounds.map((p) => html`
        <a href=${href('playground', uid, p.kind)} aria-current=${p === chosen ? 'page' : undefined}>${p.label}</a>`)}</nav>
      <${Loaded} key=${chosen.kind} playground=${chosen} model=${m}/>`}
  </div>`;
}
