// A model's demand settings on its page: autoscaling's bounds, target and delays, its keep_alive,
// and the replicas it has against those the supervisor wants; the form changes the autoscaling
// while the model serves (POST /v1/models/{uid}/autoscale). Whether the values fit together is
// the API's to say: its message is shown as it is.
import { api } from '../api.js';
import { duration, number } from '../format.js';
import { useAction } from '../hooks.js';
import { html, useState } from '../html.js';
import { can } from '../session.js';
import { ErrorBox, Field } from './ui.js';

// The route's fields, in the order the form shows them: [name, label, hint, input attributes].
const FIELDS = [
  ['min_replicas', 'Min replicas', '0: unloaded when idle', { min: 0, step: 1 }],
  ['max_replicas', 'Max replicas', null, { min: 1, step: 1 }],
  ['target_inflight', 'Target in flight', 'requests running plus queued per replica', { min: 0, step: 'any' }],
  ['scale_up_delay', 'Scale-up delay (s)', 'the load stays above the target this long', { min: 0, step: 'any' }],
  ['scale_down_delay', 'Scale-down delay (s)', 'the load fits one replica fewer this long', { min: 0, step: 'any' }],
];

export function keepAliveText(model) {
  const seconds = model.keep_alive_s;
  const value = seconds === null || seconds === undefined ? 'never' : duration(seconds);
  const own = model.launch_options?.keep_alive;
  return own === undefined || own === null ? `${value} (the cluster's default)` : value;
}

function Settings({ model }) {
  const settings = model.autoscale;
  const rows = [
    ['Replicas', `${model.ready_replicas} ready of ${model.replica}, ${model.desired_replicas ?? '–'} wanted`],
    ['Keep alive', keepAliveText(model)],
  ];
  if (settings) {
    rows.push(['Replicas between', `${settings.min_replicas} and ${settings.max_replicas}`],
      ['Target in flight', `${number(settings.target_inflight)} per replica`],
      ['Scale up after', duration(settings.scale_up_delay)],
      ['Scale down after', duration(settings.scale_down_delay)]);
  }
  return html`<dl class="facts" data-testid="autoscale-settings">
    <dt>Autoscaling</dt><dd>${settings ? 'on' : 'off: the replicas it was given'}</dd>
    ${rows.map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}
  </dl>`;
}

// The fields typed in, as the route takes them: those left empty keep their value.
function changesFrom(form) {
  const changes = {};
  for (const [name] of FIELDS) {
    const text = String(form[name] ?? '').trim();
    if (text !== '') changes[name] = Number(text);
  }
  return changes;
}

function SettingsForm({ uid, settings, onSaved }) {
  // Only what was typed: the rest shows the settings in force, kept current by the page's poll.
  const [typed, setTyped] = useState({});
  const [saved, setSaved] = useState(false);
  const { busy, error, submit } = useAction();
  const value = (name) => typed[name] ?? settings?.[name] ?? '';
  const save = submit(async () => {
    setSaved(false);
    const changes = changesFrom(Object.fromEntries(FIELDS.map(([name]) => [name, value(name)])));
    await api(`/v1/models/${encodeURIComponent(uid)}/autoscale`, { method: 'POST', body: changes });
    setTyped({});
    setSaved(true);
    onSaved();
  });
  return html`<form class="subform" onSubmit=${save} data-testid="autoscale-form" aria-label="Change autoscaling">
    <div class="fields">${FIELDS.map(([name, label, hint, attrs]) => html`
      <${Field} id=${`autoscale-${name}`} label=${label} hint=${hint}>
        <input id=${`autoscale-${name}`} type="number" value=${value(name)} ...${attrs}
          placeholder=${settings ? '' : 'default'}
          onInput=${(e) => { setSaved(false); setTyped((old) => ({ ...old, [name]: e.target.value })); }}/>
      </${Field}>`)}</div>
    <${ErrorBox} error=${error} title="Not changed:"/>
    <div class="actions">
      ${saved ? html`<span class="ok-text small" role="status">Saved.</span>` : null}
      <button type="submit" class="primary" id="autoscale-save" disabled=${busy}>
        ${busy ? 'Saving…' : settings ? 'Save autoscaling' : 'Turn autoscaling on'}</button>
    </div>
  </form>`;
}

export function AutoscalePanel({ uid, model, onChange }) {
  return html`<section class="card" aria-labelledby="autoscale-title">
    <h2 id="autoscale-title">Autoscaling</h2>
    <${Settings} model=${model}/>
    ${model.status === 'idle' ? html`<p class="notice small">Idle: no replica is loaded; its next
      request loads it.</p>` : null}
    ${can('models:start') ? html`<${SettingsForm} uid=${uid} settings=${model.autoscale} onSaved=${onChange}/>` : null}
  </section>`;
}
