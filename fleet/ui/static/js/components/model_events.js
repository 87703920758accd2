// What the supervisor did to a model's replicas on its own, and why (GET /v1/models/{uid}/events):
// scale-ups and downs, idle unloads, loads on demand and the steps that failed, newest first,
// asked again while the page is open.
import { api } from '../api.js';
import { when } from '../format.js';
import { usePoll } from '../hooks.js';
import { html } from '../html.js';
import { ErrorBox, Loading } from './ui.js';

// Each kind the API records: what a person reads, the way it moved the replica count, and
// whether it was a step that failed (and so moved nothing).
const KINDS = {
  scale_up: ['Scaled up', 'up', false],
  scale_down: ['Scaled down', 'down', false],
  unload: ['Unloaded (idle)', 'down', false],
  load: ['Loaded (woken)', 'up', false],
  keep_alive: ['keep_alive set by a request', null, false],
  scale_up_failed: ['Scale-up failed', null, true],
  load_failed: ['Load failed', null, true],
};

function EventRow({ event }) {
  const [label, direction, failed] = KINDS[event.kind] || [event.kind, null, false];
  return html`<tr data-kind=${event.kind}>
    <td>${when(event.time)}</td>
    <td class=${failed ? 'error-text' : ''}>${label}</td>
    <td>${direction === 'up' ? '↑ up' : direction === 'down' ? '↓ down' : '–'}</td>
    <td class="num">${event.from} → ${event.to}</td>
    <td>${event.reason}</td>
  </tr>`;
}

export function ModelEvents({ uid, every }) {
  const path = `/v1/models/${encodeURIComponent(uid)}/events`;
  const { data, error } = usePoll(() => api(path), every, [uid, every]);
  let body;
  if (!data) body = error ? html`<${ErrorBox} error=${error}/>` : html`<${Loading} what="events"/>`;
  else if (data.data.length === 0) body = html`<p class="muted">Nothing yet: no replica was added, removed, unloaded or loaded on its own.</p>`;
  else {
    body = html`<div class="table-wrap"><table data-testid="model-events">
      <thead><tr><th>Time</th><th>Event</th><th>Direction</th><th class="num">Replicas</th><th>Reason</th></tr></thead>
      <tbody>${[...data.data].reverse().map((e) => html`<${EventRow} event=${e}/>`)}</tbody>
    </table></div>`;
  }
  return html`<section class="card" aria-labelledby="events-title">
    <h2 id="events-title">Events</h2>
    ${data && error ? html`<${ErrorBox} error=${error} title="Live updates stopped:"/>` : null}
    ${body}
  </section>`;
}
