// The launch form's demand options: how long the model stays loaded without a request
// (keep_alive) and its autoscaling (min/max replicas, target in flight), all optional: left
// empty, the model keeps the replicas it is given and the cluster's keep_alive.
import { html } from '../html.js';
import { Field } from './ui.js';

export const EMPTY_DEMAND = { keep_alive: '', min_replicas: '', max_replicas: '', target_inflight: '' };

// The launch body's fields for what was typed. A floor above the replicas asked for starts the
// model at the floor, as a launch that names no replica count does.
export function demandBody(demand, replica) {
  const body = {};
  if (demand.keep_alive.trim()) body.keep_alive = demand.keep_alive.trim(); // the API reads "300" as seconds
  for (const name of ['min_replicas', 'max_replicas', 'target_inflight']) {
    if (String(demand[name]).trim() !== '') body[name] = Number(demand[name]);
  }
  if (body.min_replicas !== undefined && body.min_replicas > replica) body.replica = body.min_replicas;
  return body;
}

export function DemandFields({ demand, onChange }) {
  const set = (name) => (e) => onChange({ ...demand, [name]: e.target.value });
  const number = (name, label, hint, attrs) => html`<${Field} id=${`launch-${name}`} label=${label} hint=${hint}>
    <input id=${`launch-${name}`} type="number" value=${demand[name]} placeholder="none" ...${attrs}
      onInput=${set(name)}/></${Field}>`;
  return html`<details data-testid="launch-demand"><summary>Keep alive and autoscaling</summary>
    <div class="fields">
      <${Field} id="launch-keep_alive" label="Keep alive" hint="unload after this long without a request: 30s, 10m, 1h; -1 never; empty: the cluster's">
        <input id="launch-keep_alive" value=${demand.keep_alive} placeholder="cluster default"
          onInput=${set('keep_alive')}/></${Field}>
      ${number('min_replicas', 'Min replicas', '0: unloaded when idle; naming a bound turns autoscaling on', { min: 0, step: 1 })}
      ${number('max_replicas', 'Max replicas', null, { min: 1, step: 1 })}
      ${number('target_inflight', 'Target in flight', 'requests running plus queued per replica; empty: the type\'s default', { min: 0, step: 'any' })}
    </div></details>`;
}
