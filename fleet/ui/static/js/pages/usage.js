// Usage for admins (GET /v1/usage): the totals over a range by key, user or model, the tokens
// used hour by hour, and the same totals as a CSV file. Keys are shown by name where the key
// list knows them (their ids are what the records hold).
import { api, withQuery } from '../api.js';
import { Chart } from '../components/chart.js';
import { ErrorBox, Loading } from '../components/ui.js';
import { number } from '../format.js';
import { useLoad } from '../hooks.js';
import { html, useMemo, useState } from '../html.js';

const RANGES = [['24h', 'Last 24 hours', 24], ['7d', 'Last 7 days', 24 * 7], ['30d', 'Last 30 days', 24 * 30]];
const GROUPS = [['key', 'Key', 'key_id'], ['user', 'User', 'user'], ['model', 'Model', 'model']];
const HOUR_MS = 3600 * 1000;

function startOf(range) {
  const hours = RANGES.find(([id]) => id === range)[2];
  // From the start of an hour, so that the first bucket of the chart is a whole one.
  return new Date(Math.floor(Date.now() / HOUR_MS) * HOUR_MS - (hours - 1) * HOUR_MS).toISOString();
}

// Every hour of the range, with 0 where nothing was used: a gap is a quiet hour, not missing data.
function hourlyChart(rows, start) {
  const first = Date.parse(start);
  const count = Math.ceil((Date.now() - first) / HOUR_MS);
  const xs = Array.from({ length: count }, (_, i) => (first + i * HOUR_MS) / 1000);
  const prompt = new Array(count).fill(0);
  const completion = new Array(count).fill(0);
  for (const row of rows) {
    const i = Math.round((Date.parse(row.bucket) - first) / HOUR_MS);
    if (i >= 0 && i < count) { prompt[i] = row.prompt_tokens; completion[i] = row.completion_tokens; }
  }
  return { id: 'usage-tokens', title: 'Tokens per hour', unit: '', xs,
    series: rows.length ? [{ label: 'prompt', values: prompt }, { label: 'completion', values: completion }] : [] };
}

async function downloadCsv(query) {
  const text = await api('/v1/usage', { query: { ...query, format: 'csv' }, text: true });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
  link.download = `fleet-usage-${query.group_by}-${query.start.slice(0, 13)}.csv`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function Totals({ rows, group, names }) {
  const [, label, field] = GROUPS.find(([id]) => id === group);
  const shown = (value) => {
    if (value === null) return html`<span class="muted">${group === 'key' ? 'no key' : '—'}</span>`;
    return group === 'key' && names[value] ? html`${names[value]} <code class="small">${value}</code>` : value;
  };
  if (rows.length === 0) return html`<p class="muted">Nothing used in this range.</p>`;
  return html`<div class="table-wrap"><table data-testid="usage-totals">
    <thead><tr><th>${label}</th><th>Requests</th><th>Errors</th><th>Prompt tokens</th>
      <th>Completion tokens</th><th>Total tokens</th><th>Images</th><th>Audio (s)</th><th>Mean latency</th></tr></thead>
    <tbody>${rows.map((row) => html`<tr>
      <td>${shown(row[field])}</td><td>${number(row.requests)}</td><td>${number(row.errors)}</td>
      <td>${number(row.prompt_tokens)}</td><td>${number(row.completion_tokens)}</td>
      <td><strong>${number(row.total_tokens)}</strong></td><td>${number(row.images)}</td>
      <td>${number(row.audio_seconds, 1)}</td><td>${number(row.mean_latency_ms, 0)} ms</td></tr>`)}</tbody>
  </table></div>`;
}

export default function UsagePage() {
  const [range, setRange] = useState('24h');
  const [group, setGroup] = useState('key');
  const [csvError, setCsvError] = useState(null);
  const start = useMemo(() => startOf(range), [range]);
  const query = { group_by: group, start };
  const totals = useLoad(() => api('/v1/usage', { query }), [range, group]);
  const hourly = useLoad(() => api('/v1/usage', { query: { bucket: 'hour', start } }), [range]);
  const keys = useLoad(() => api('/v1/keys').catch(() => ({ data: [] })), []);
  const names = Object.fromEntries((keys.data?.data || []).map((k) => [k.id, k.name]));
  const chart = useMemo(() => hourlyChart(hourly.data?.data || [], start), [hourly.data, start]);
  const csv = () => downloadCsv(query).then(() => setCsvError(null), setCsvError);
  return html`<div>
    <h1>Usage</h1>
    <div class="row" role="group" aria-label="What to show">
      <label class="small">Range <select id="usage-range" value=${range} onChange=${(e) => setRange(e.target.value)}>
        ${RANGES.map(([id, label]) => html`<option value=${id}>${label}</option>`)}</select></label>
      <label class="small">By <select id="usage-group" value=${group} onChange=${(e) => setGroup(e.target.value)}>
        ${GROUPS.map(([id, label]) => html`<option value=${id}>${label}</option>`)}</select></label>
      <a href=${withQuery('/v1/usage', { ...query, format: 'csv' })} id="usage-csv" data-testid="usage-csv"
        onClick=${(e) => { e.preventDefault(); csv(); }}>Download CSV</a>
    </div>
    <${ErrorBox} error=${csvError} title="No CSV:"/>
    ${hourly.error ? html`<${ErrorBox} error=${hourly.error}/>` : hourly.data ? html`<${Chart} chart=${chart}/>` : null}
    ${totals.error ? html`<${ErrorBox} error=${totals.error}/>` : !totals.data ? html`<${Loading}/>`
      : html`<${Totals} rows=${totals.data.data} group=${group} names=${names}/>`}
  </div>`;
}
