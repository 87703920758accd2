// The launch form of one family: variant, engine, replicas, GPU, uid, model path, keep_alive and
// autoscaling, and the chosen engine's own options (from GET /v1/engines/{type}/{name}?detailed=true),
// with the estimate beside it and the launch's progress below once it is sent.
import { api } from '../api.js';
import { sizeLabel } from '../catalogue_data.js';
import { html, useMemo, useState } from '../html.js';
import { EstimatePanel, useEstimate } from './estimate.js';
import { DemandFields, demandBody, EMPTY_DEMAND } from './launch_demand.js';
import { LaunchProgress } from './launch_progress.js';
import { ErrorBox, Field } from './ui.js';

// Every (spec, quantization) pair is one variant the user can pick.
export function variantsOf(family) {
  return (family.model_specs || []).flatMap((spec) => (spec.quantizations || ['none']).map((q) => ({
    format: spec.model_format, size: spec.model_size_in_billions, quantization: q,
    label: [spec.model_format, sizeLabel(spec.model_size_in_billions), q].filter(Boolean).join(' · '),
  })));
}

function optionValue(option, text) {
  if (text === '' || text === undefined) return undefined;
  if (option.type === 'boolean') return text === 'true';
  if (option.type === 'integer' || option.type === 'number') return Number(text);
  return text;
}

function OptionInput({ option, value, onChange }) {
  const id = `option-${option.name}`;
  const choices = option.type.includes(' | ') ? option.type.split(' | ')
    : option.type === 'boolean' ? ['true', 'false'] : null;
  return html`<${Field} id=${id} label=${option.name} hint=${option.help}>
    ${choices
      ? html`<select id=${id} value=${value || ''} onChange=${(e) => onChange(e.target.value)}>
          <option value="">default</option>${choices.map((c) => html`<option value=${c}>${c}</option>`)}</select>`
      : html`<input id=${id} type=${option.type === 'string' ? 'text' : 'number'} value=${value || ''}
          min=${option.minimum} max=${option.maximum} placeholder="default"
          onInput=${(e) => onChange(e.target.value)}/>`}
  </${Field}>`;
}

function buildBody(type, family, variant, form, engineOptions) {
  const body = { model_name: family.model_name, model_type: type, model_format: variant.format,
    quantization: variant.quantization, replica: Number(form.replica) || 1 };
  if (variant.size !== null && variant.size !== undefined) body.model_size_in_billions = variant.size;
  if (form.engine) body.model_engine = form.engine;
  if (form.n_gpu && form.n_gpu !== 'auto') body.n_gpu = /^\d+$/.test(form.n_gpu) ? Number(form.n_gpu) : form.n_gpu;
  if (form.model_uid.trim()) body.model_uid = form.model_uid.trim();
  if (form.model_path.trim()) body.model_path = form.model_path.trim();
  if (form.skip) body.skip_memory_check = true;
  for (const option of engineOptions) {
    const value = optionValue(option, form.options[option.name]);
    if (value !== undefined) body[option.name] = value;
  }
  return body;
}

function parseExtra(text) {
  if (!text.trim()) return {};
  const parsed = JSON.parse(text);
  if (typeof parsed !== 'object' || Array.isArray(parsed) || parsed === null) {
    throw new Error('extra options must be a JSON object');
  }
  return parsed;
}

export function LaunchForm({ type, family, engines }) {
  const variants = useMemo(() => variantsOf(family), [family]);
  const [form, setForm] = useState({ variant: 0, engine: '', replica: '1', n_gpu: 'auto',
    model_uid: '', model_path: '', options: {}, extra: '', skip: false, demand: EMPTY_DEMAND });
  const [launched, setLaunched] = useState(null);
  const [launchError, setLaunchError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (name) => (value) => setForm((old) => ({ ...old, [name]: value }));
  const variant = variants[form.variant] || variants[0];
  const usable = engines.filter((e) => e.available && e.formats.includes(variant.format));

  let extra = {};
  let extraError = null;
  try { extra = parseExtra(form.extra); } catch (error) { extraError = error.message; }
  // Option values typed in (for any engine's options; only the chosen engine's are shown).
  const allOptions = engines.flatMap((e) => e.launch_options || []);
  const body = { ...buildBody(type, family, variant, form, allOptions),
    ...demandBody(form.demand, Number(form.replica) || 1), ...extra };
  const shown = useEstimate(body);
  // The options shown are the chosen engine's, or those of the one the estimate picked.
  const engineName = form.engine || shown.estimate?.model_engine;
  const engineOptions = engines.find((e) => e.engine === engineName)?.launch_options || [];
  const refused = !form.skip && shown.estimate && !shown.estimate.fits;
  const blocked = busy || shown.pending || Boolean(shown.error) || refused || Boolean(extraError);

  const launch = async (event) => {
    event.preventDefault();
    setBusy(true);
    setLaunchError(null);
    try {
      const { model_uid: uid } = await api('/v1/models', { method: 'POST', body, query: { wait_ready: false } });
      setLaunched(uid);
    } catch (error) {
      setLaunchError(error);
    } finally {
      setBusy(false);
    }
  };

  return html`<form class="card" onSubmit=${launch} aria-labelledby="launch-title" data-testid="launch-form">
    <h2 id="launch-title">Launch</h2>
    <div class="two">
      <div>
        <div class="fields">
          <${Field} id="launch-variant" label="Variant">
            <select id="launch-variant" value=${form.variant} onChange=${(e) => set('variant')(Number(e.target.value))}>
              ${variants.map((v, i) => html`<option value=${i}>${v.label}</option>`)}</select></${Field}>
          <${Field} id="launch-engine" label="Engine">
            <select id="launch-engine" value=${form.engine} onChange=${(e) => set('engine')(e.target.value)}>
              <option value="">automatic</option>
              ${usable.map((e) => html`<option value=${e.engine}>${e.engine}</option>`)}</select></${Field}>
          <${Field} id="launch-replica" label="Replicas">
            <input id="launch-replica" type="number" min="1" max="64" value=${form.replica}
              onInput=${(e) => set('replica')(e.target.value)}/></${Field}>
          <${Field} id="launch-gpu" label="GPUs per replica" hint="auto, 0 for CPU, or a count">
            <input id="launch-gpu" value=${form.n_gpu} onInput=${(e) => set('n_gpu')(e.target.value)}/></${Field}>
          <${Field} id="launch-uid" label="Model uid" hint="default: the model's name">
            <input id="launch-uid" value=${form.model_uid} onInput=${(e) => set('model_uid')(e.target.value)}/></${Field}>
        </div>
        <${Field} id="launch-path" label="Model path" hint="a folder or file on the workers; empty: download from the hub">
          <input id="launch-path" value=${form.model_path} onInput=${(e) => set('model_path')(e.target.value)}/></${Field}>
        ${engineOptions.length ? html`<details><summary>${engineName} options</summary><div class="fields">
          ${engineOptions.map((o) => html`<${OptionInput} option=${o} value=${form.options[o.name]}
            onChange=${(v) => set('options')({ ...form.options, [o.name]: v })}/>`)}</div></details>` : null}
        <${DemandFields} demand=${form.demand} onChange=${set('demand')}/>
        <${Field} id="launch-extra" label="Extra options (JSON)" hint='merged into the launch body, e.g. {"request_limits": 64}'>
          <textarea id="launch-extra" rows="2" value=${form.extra} onInput=${(e) => set('extra')(e.target.value)}></textarea></${Field}>
        ${extraError ? html`<div class="error">${extraError}</div>` : null}
      </div>
      <div><h3>Will it fit?</h3><${EstimatePanel} state=${shown}/>
        ${shown.estimate && !shown.estimate.fits ? html`<label class="row small"><input type="checkbox"
          checked=${form.skip} onChange=${(e) => set('skip')(e.target.checked)}/> Launch anyway (skip the memory check)</label>` : null}
      </div>
    </div>
    <${ErrorBox} error=${launchError} title="Launch refused:"/>
    <div class="actions">
      <button type="submit" class="primary" id="launch-button" disabled=${blocked}>
        ${busy ? 'Launching…' : 'Launch'}</button>
    </div>
    ${launched ? html`<${LaunchProgress} key=${launched} uid=${launched}/>` : null}
  </form>`;
}
