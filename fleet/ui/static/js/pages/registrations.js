// Custom registrations: list per type, show, unregister, and register a new model from a form
// or a pasted or uploaded JSON file. Validation is the API's: its messages are shown as they are.
import { api } from '../api.js';
import { ConfirmDialog, ErrorBox, Field, Loading } from '../components/ui.js';
import { MODEL_TYPES } from '../catalogue_data.js';
import { useLoad } from '../hooks.js';
import { html, useState } from '../html.js';
import { href, navigate, queryParams, replaceQuery } from '../navigation.js';
import { EMPTY_FORM, familyFromForm, FORM_TYPES, pretty } from '../registration_form.js';
import { can } from '../session.js';

function FormFields({ type, form, set }) {
  const input = (name, label, attrs = {}) => html`<${Field} id=${`reg-${name}`} label=${label} hint=${attrs.hint}>
    <input id=${`reg-${name}`} value=${form[name]} onInput=${(e) => set(name, e.target.value)} ...${attrs}/></${Field}>`;
  const toggle = (ability) => set('abilities', form.abilities.includes(ability)
    ? form.abilities.filter((a) => a !== ability) : [...form.abilities, ability]);
  return html`<div class="fields">
    ${input('model_name', 'Name', { required: true })}
    ${input('model_uri', 'Weights path', { hint: 'a folder (or GGUF file) on the workers' })}
    ${input('model_description', 'Description')}
    ${input('language', 'Languages', { hint: 'comma separated' })}
    ${type === 'LLM' ? html`
      ${input('context_length', 'Context length', { type: 'number', min: 1 })}
      ${input('model_family', 'Chat format of', { hint: 'a built-in family, e.g. qwen2.5-instruct' })}
      <${Field} id="reg-format" label="Format"><select id="reg-format" value=${form.model_format}
        onChange=${(e) => set('model_format', e.target.value)}>
        ${['pytorch', 'gguf', 'awq', 'gptq'].map((f) => html`<option value=${f}>${f}</option>`)}</select></${Field}>
      ${input('quantization', 'Quantization')}
      ${input('size', 'Size (billions)', { type: 'number', min: 0, step: 'any' })}
      <fieldset class="field"><legend class="small">Abilities</legend>
        ${['chat', 'generate', 'tools', 'vision', 'reasoning'].map((a) => html`<label class="row small">
          <input type="checkbox" checked=${form.abilities.includes(a)} onChange=${() => toggle(a)}/> ${a}</label>`)}
      </fieldset>` : null}
    ${type === 'embedding' ? html`
      ${input('dimensions', 'Dimensions', { type: 'number', min: 1, required: true })}
      ${input('max_tokens', 'Max tokens', { type: 'number', min: 1 })}` : null}
  </div>`;
}

function RegisterForm({ type, onDone }) {
  const [mode, setMode] = useState(FORM_TYPES.includes(type) ? 'form' : 'json');
  const [form, setForm] = useState(EMPTY_FORM);
  const [json, setJson] = useState('');
  const [persist, setPersist] = useState(true);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (name, value) => setForm((old) => ({ ...old, [name]: value }));
  const formMode = mode === 'form' && FORM_TYPES.includes(type);
  const text = formMode ? pretty(familyFromForm(type, form)) : json;

  const upload = async (event) => {
    const file = event.target.files[0];
    if (file) setJson(await file.text());
  };
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      // The API reads the family as a JSON string (Xinference's client sends it so) and
      // validates it: a malformed file gets the API's own message.
      await api(`/v1/model_registrations/${type}`, { method: 'POST', body: { model: text, persist } });
      const name = JSON.parse(text).model_name;
      onDone(name);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };

  return html`<form class="card" onSubmit=${submit} aria-labelledby="register-title" data-testid="register-form">
    <h2 id="register-title">Register a ${type} model</h2>
    ${FORM_TYPES.includes(type) ? html`<div class="row" role="radiogroup" aria-label="How">
      <label class="row small"><input type="radio" name="reg-mode" checked=${mode === 'form'} onChange=${() => setMode('form')}/> Form</label>
      <label class="row small"><input type="radio" name="reg-mode" checked=${mode === 'json'} onChange=${() => setMode('json')}/> JSON</label>
    </div>` : null}
    ${formMode ? html`<${FormFields} type=${type} form=${form} set=${set}/>
      <details><summary class="small">The JSON this sends</summary><pre class="json">${text}</pre></details>` : html`
      <${Field} id="reg-json" label="Model JSON (Xinference's custom model format)">
        <textarea id="reg-json" rows="10" value=${json} onInput=${(e) => setJson(e.target.value)}
          placeholder='{"model_name": "my-model", ...}'></textarea></${Field}>
      <${Field} id="reg-file" label="…or upload a JSON file">
        <input id="reg-file" type="file" accept=".json,application/json" onChange=${upload}/></${Field}>`}
    <label class="row small"><input type="checkbox" checked=${persist} onChange=${(e) => setPersist(e.target.checked)}/>
      Keep it across restarts</label>
    <${ErrorBox} error=${error} title="Not registered:"/>
    <div class="actions"><button type="submit" class="primary" id="register-button" disabled=${busy || !text.trim()}>
      ${busy ? 'Registering…' : 'Register'}</button></div>
  </form>`;
}

export function Unregister({ type, name, onDone }) {
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState(null);
  const confirm = async () => {
    setAsking(false);
    try {
      await api(`/v1/model_registrations/${type}/${encodeURIComponent(name)}`, { method: 'DELETE' });
      onDone();
    } catch (caught) {
      setError(caught);
    }
  };
  return html`<span>
    <button type="button" class="small" onClick=${() => setAsking(true)}>Unregister</button>
    <${ErrorBox} error=${error}/>
    <${ConfirmDialog} open=${asking} title=${`Unregister ${name}?`} confirmLabel="Unregister"
      onConfirm=${confirm} onCancel=${() => setAsking(false)}><p>It leaves the catalogue of every worker.</p></${ConfirmDialog}>
  </span>`;
}

export default function RegistrationsPage() {
  const [type, setType] = useState(() => queryParams().type || 'LLM');
  const list = useLoad(() => api(`/v1/model_registrations/${type}`), [type]);
  const choose = (value) => { setType(value); replaceQuery({ type: value }); };
  const custom = (list.data || []).filter((r) => !r.is_builtin);
  const builtin = (list.data || []).length - custom.length;
  return html`<div>
    <h1>Registrations</h1>
    <nav class="tabs" aria-label="Model type">${MODEL_TYPES.map((t) => html`<a href=${`/ui/registrations?type=${t}`}
      aria-current=${t === type ? 'page' : undefined} onClick=${(e) => { e.preventDefault(); choose(t); }}>${t}</a>`)}</nav>
    ${list.error ? html`<${ErrorBox} error=${list.error}/>` : list.loading && !list.data ? html`<${Loading}/>` : html`
      <p class="muted small">${builtin} built-in ${type} families are in the <a href=${`/ui/catalogue?type=${type}`}>catalogue</a>.</p>
      ${custom.length === 0 ? html`<p>No custom ${type} model is registered.</p>` : html`
        <div class="table-wrap"><table data-testid="registrations">
          <thead><tr><th>Name</th><th></th></tr></thead>
          <tbody>${custom.map((r) => html`<tr><td><a href=${href('registrations', type, r.model_name)}>${r.model_name}</a></td>
            <td>${can('models:unregister') ? html`<${Unregister} type=${type} name=${r.model_name} onDone=${list.refresh}/>` : null}</td></tr>`)}</tbody>
        </table></div>`}`}
    ${can('models:register') ? html`<${RegisterForm} key=${type} type=${type}
      onDone=${(name) => navigate(href('registrations', type, name))}/>` : null}
  </div>`;
}
