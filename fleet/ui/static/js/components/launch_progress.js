// A launch under way: its progress (download, then load) until it is ready, idle (unloaded
// already: a keep_alive of 0) or has failed, polled from GET /v1/models/{uid}/progress.
import { api } from '../api.js';
import { usePoll } from '../hooks.js';
import { html } from '../html.js';
import { href } from '../navigation.js';
import { can } from '../session.js';
import { ErrorBox, ProgressBar } from './ui.js';

const REFRESH_MS = 700;

function done(data) {
  return data && ['ready', 'idle', 'failed'].includes(data.status);
}

export function LaunchProgress({ uid }) {
  const progress = usePoll(() => api(`/v1/models/${encodeURIComponent(uid)}/progress`),
    REFRESH_MS, [uid], done);
  const { data } = progress;
  if (progress.error?.status === 404) {
    // A launch refused once it had begun (a path the worker cannot read, say) leaves no model.
    return html`<${ErrorBox} title=${`The launch of ${uid} failed:`} error=${progress.error}/>`;
  }
  if (!data) return html`<p class="muted">Starting ${uid}…</p>`;
  if (data.status === 'failed') {
    return html`<${ErrorBox} title=${`The launch of ${uid} failed:`} error=${data.error || 'no reason given'}/>`;
  }
  if (data.status === 'ready' || data.status === 'idle') {
    return html`<div class="notice" role="status" data-testid="launch-ready">
      ${data.status === 'ready' ? html`<strong class="ok-text">${uid} is ready.</strong>`
        : html`<strong>${uid} is idle:</strong> its next request loads it.`}
      <a href=${href('models', uid)}>Details</a> · <a href=${href('playground', uid)}>Open the playground</a>
    </div>`;
  }
  const cancel = () => api(`/v1/models/${encodeURIComponent(uid)}/cancel`, { method: 'POST' });
  return html`<div role="status" data-testid="launch-progress">
    <${ProgressBar} value=${data.progress} label=${`${uid}: ${data.stage || data.status}`}/>
    ${can('models:stop') ? html`<button type="button" class="small" onClick=${cancel}>Cancel</button>` : null}
  </div>`;
}
