// The cluster, live: workers with their CPU, RAM and GPU memory, models with each replica's
// state, restarts and memory. One call (GET /v1/cluster/overview) every 2 s while visible.
import { api } from '../api.js';
import { ErrorBox, Loading, Meter, ProgressBar, StateBadge } from '../components/ui.js';
import { bytes, duration } from '../format.js';
import { usePoll } from '../hooks.js';
import { html } from '../html.js';
import { href } from '../navigation.js';

const REFRESH_MS = 2000;

function Worker({ worker }) {
  const res = worker.resources || {};
  const usedRam = res.memory_total - res.memory_available;
  return html`<article class="card worker" data-testid="worker">
    <h3>${worker.address}</h3>
    <p class="muted">heartbeat ${duration(worker.seconds_since_heartbeat)} ago ·
      ${(worker.replicas || []).length} replica(s)</p>
    <${Meter} label=${`CPU (${res.cpu_count} cores)`} used=${res.cpu_percent} total=${100}
      text=${`${Math.round(res.cpu_percent || 0)}% in use`}/>
    <${Meter} label="RAM" used=${usedRam} total=${res.memory_total}
      text=${`${bytes(usedRam)} used · ${bytes(res.memory_available)} free of ${bytes(res.memory_total)}`}/>
    ${(res.gpus || []).map((gpu) => html`<${Meter} label=${`GPU ${gpu.index}${gpu.name ? ` ${gpu.name}` : ''}`}
      used=${gpu.memory_used} total=${gpu.memory_total}
      text=${`${bytes(gpu.memory_used)} used · ${bytes(gpu.memory_free)} free of ${bytes(gpu.memory_total)}`}/>`)}
    ${(res.gpus || []).length === 0 ? html`<p class="muted small">No GPU</p>` : null}
  </article>`;
}

function ReplicaRow({ replica }) {
  const loading = replica.state === 'launching' || replica.state === 'restarting';
  return html`<tr>
    <td>${replica.replica_uid}</td>
    <td>${replica.worker_address}</td>
    <td><${StateBadge} state=${replica.state}/>
      ${loading ? html`<${ProgressBar} value=${replica.progress} label=${replica.stage}/>` : null}
      ${replica.error ? html`<div class="small error-text">${replica.error}</div>` : null}</td>
    <td class="num">${replica.restarts ?? 0}</td>
    <td class="num">${bytes(replica.memory_bytes)}</td>
    <td class="num">${duration(replica.uptime_s)}</td>
    <td class="num">${replica.requests_served ?? '–'}</td>
  </tr>`;
}

function ModelBlock({ model }) {
  return html`<section class="card model" data-testid="cluster-model">
    <div class="row spread">
      <h3><a href=${href('models', model.model_uid)}>${model.model_uid}</a>
        <span class="muted small"> ${model.model_name} · ${model.model_type} · ${model.model_engine}</span></h3>
      <span><${StateBadge} state=${model.status}/> ${model.ready_replicas}/${model.replica} ready</span>
    </div>
    ${model.error ? html`<div class="small error-text">${model.error}</div>` : null}
    <div class="table-wrap"><table>
      <thead><tr><th>Replica</th><th>Worker</th><th>State</th><th>Restarts</th><th>Memory</th>
        <th>Uptime</th><th>Served</th></tr></thead>
      <tbody>${model.replicas.map((r) => html`<${ReplicaRow} replica=${r}/>`)}</tbody>
    </table></div>
  </section>`;
}

export default function ClusterPage() {
  const { data, error } = usePoll(() => api('/v1/cluster/overview'), REFRESH_MS);
  if (!data) return error ? html`<${ErrorBox} error=${error}/>` : html`<${Loading} what="the cluster"/>`;
  const replicas = data.models.flatMap((m) => m.replicas);
  const ready = replicas.filter((r) => r.state === 'ready').length;
  return html`<div id="cluster" data-ready="true">
    <h1>Cluster</h1>
    ${error ? html`<${ErrorBox} error=${error} title="Live updates stopped:"/>` : null}
    <div class="stats">
      <div class="stat"><span class="stat-value">${data.workers ? data.workers.length : '–'}</span>workers</div>
      <div class="stat"><span class="stat-value">${data.models.length}</span>models</div>
      <div class="stat"><span class="stat-value">${ready}/${replicas.length}</span>replicas ready</div>
    </div>
    <h2>Workers</h2>
    ${data.workers === null
      ? html`<p class="muted">This API key may not see the workers' resources (that needs
          <code>metrics:read</code>).</p>`
      : html`<div class="grid" data-testid="cluster-workers">${data.workers.map((w) => html`<${Worker} worker=${w}/>`)}</div>`}
    <h2>Models</h2>
    ${data.models.length === 0
      ? html`<p class="muted">No model is running. <a href="/ui/catalogue">Launch one from the catalogue</a>.</p>`
      : data.models.map((m) => html`<${ModelBlock} model=${m}/>`)}
  </div>`;
}
