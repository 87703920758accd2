// One registration as the API holds it, with its launch page and unregister.
import { api } from '../api.js';
import { ErrorBox, Json, Loading } from '../components/ui.js';
import { useLoad } from '../hooks.js';
import { html } from '../html.js';
import { href, navigate } from '../navigation.js';
import { can } from '../session.js';
import { Unregister } from './registrations.js';

export default function RegistrationPage({ type, name }) {
  const entry = useLoad(() => api(`/v1/model_registrations/${type}/${encodeURIComponent(name)}`), [type, name]);
  if (entry.error) return html`<${ErrorBox} error=${entry.error}/>`;
  if (!entry.data) return html`<${Loading} what=${name}/>`;
  return html`<div>
    <p class="small"><a href=${`/ui/registrations?type=${type}`}>Registrations</a> / ${type}</p>
    <div class="row spread"><h1>${name}</h1>
      <div class="row"><a class="button primary" href=${href('catalogue', type, name)}>Launch…</a>
        ${entry.data.is_builtin === false && can('models:unregister')
          ? html`<${Unregister} type=${type} name=${name} onDone=${() => navigate(`/ui/registrations?type=${type}`)}/>` : null}</div></div>
    <${Json} value=${entry.data}/>
  </div>`;
}
