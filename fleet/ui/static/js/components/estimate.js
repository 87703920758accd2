// "Will it fit": the launch's dry run (GET /v1/models/estimate), asked again as the form changes
// (debounced), so the reason a launch cannot fit shows before anything starts.
import { api } from '../api.js';
import { bytes } from '../format.js';
import { html, useEffect, useState } from '../html.js';

const DEBOUNCE_MS = 400;

export function useEstimate(body) {
  const [state, setState] = useState({ estimate: null, error: null, pending: true });
  const key = JSON.stringify(body);
  useEffect(() => {
    const controller = new AbortController();
    setState((old) => ({ ...old, pending: true }));
    const timer = setTimeout(() => {
      api('/v1/models/estimate', { query: body, signal: controller.signal }).then(
        (estimate) => setState({ estimate, error: null, pending: false }),
        (error) => { if (error.name !== 'AbortError') setState({ estimate: null, error, pending: false }); },
      );
    }, DEBOUNCE_MS);
    return () => { clearTimeout(timer); controller.abort(); };
  }, [key]);
  return state;
}

function WorkerRow({ worker }) {
  return html`<tr>
    <td>${worker.address}</td><td>${worker.where}</td>
    <td class="num">${bytes(worker.free)}</td><td class="num">${bytes(worker.needed)}</td>
    <td>${worker.fits ? html`<span class="ok-text">fits</span>`
      : html`<span class="error-text">${worker.problem || 'not enough memory'}</span>`}</td>
  </tr>`;
}

export function EstimatePanel({ state }) {
  const { estimate, error, pending } = state;
  if (error) {
    return html`<div class="error" role="alert" data-testid="estimate-error">
      <strong>This launch would be refused:</strong> ${error.message}</div>`;
  }
  if (!estimate) return html`<p class="muted">Estimating…</p>`;
  const memory = estimate.estimate;
  return html`<section aria-live="polite" aria-busy=${pending} data-testid="estimate">
    <p>${estimate.fits
      ? html`<strong class="ok-text">Fits.</strong> `
      : html`<strong class="error-text">Does not fit.</strong> `}
      Engine <strong>${estimate.model_engine}</strong> <span class="muted">(${estimate.engine_reason})</span></p>
    ${estimate.reason ? html`<div class="error" role="alert" data-testid="estimate-reason">${estimate.reason}</div>` : null}
    ${memory ? html`<p>One replica needs <strong>${memory.summary}</strong> on ${memory.device}.</p>
      ${memory.notes?.length ? html`<ul class="small muted">${memory.notes.map((n) => html`<li>${n}</li>`)}</ul>` : null}` : null}
    <div class="table-wrap"><table>
      <thead><tr><th>Worker</th><th>Memory</th><th class="num">Free</th><th class="num">Needed</th><th></th></tr></thead>
      <tbody>${(estimate.workers || []).map((w) => html`<${WorkerRow} worker=${w}/>`)}</tbody>
    </table></div>
  </section>`;
}
