// Charts over the last minutes from Fleet's own /metrics, sampled by the browser every 5 s
// (the history lives in this tab; the server keeps none): requests/s, tokens/s, time to first
// token, latency p50/p99, errors, and memory per worker and replica.
import { api } from '../api.js';
import { Chart } from '../components/chart.js';
import { ErrorBox } from '../components/ui.js';
import { html, useEffect, useMemo, useState } from '../html.js';
import { queryParams, replaceQuery } from '../navigation.js';
import { addSample, buildCharts, getSamples, KEEP_SECONDS } from '../metrics/history.js';
import { parsePrometheus } from '../metrics/prom.js';

// Every 5 s by default; `?every=SECONDS` (1 at least) samples faster, for a closer look.
function everyMs() {
  return Math.max(1, Number(queryParams().every) || 5) * 1000;
}

export default function MetricsPage() {
  const [version, setVersion] = useState(0);
  const [error, setError] = useState(null);
  const [model, setModel] = useState(() => queryParams().model || '');
  const [every] = useState(everyMs);

  useEffect(() => {
    let stopped = false;
    let timer = null;
    const sample = async () => {
      clearTimeout(timer);
      if (stopped) return;
      try {
        const text = await api('/metrics', { text: true });
        addSample(Date.now() / 1000, parsePrometheus(text));
        setError(null);
        setVersion((v) => v + 1);
      } catch (caught) {
        setError(caught);
      }
      if (!stopped && !document.hidden) timer = setTimeout(sample, every);
    };
    const onVisibility = () => { if (!document.hidden) sample(); else clearTimeout(timer); };
    sample();
    document.addEventListener('visibilitychange', onVisibility);
    return () => { stopped = true; clearTimeout(timer); document.removeEventListener('visibilitychange', onVisibility); };
  }, []);

  const samples = getSamples();
  const models = useMemo(() => {
    const last = samples[samples.length - 1];
    return [...new Set((last?.families.get('fleet_replica_ready') || []).map((r) => r.labels.model))].sort();
  }, [version]);
  const charts = useMemo(() => buildCharts(model), [version, model]);
  const choose = (value) => { setModel(value); replaceQuery({ ...queryParams(), model: value }); };

  return html`<div>
    <div class="row spread"><h1>Metrics</h1>
      <label class="row small">Model
        <select id="metrics-model" value=${model} onChange=${(e) => choose(e.target.value)} style="width:auto">
          <option value="">all models</option>${models.map((m) => html`<option value=${m}>${m}</option>`)}
          ${model && !models.includes(model) ? html`<option value=${model}>${model}</option>` : null}</select></label></div>
    <p class="muted small">Sampled from <code>/metrics</code> every ${every / 1000} s while this page is open;
      the last ${KEEP_SECONDS / 60} minutes are kept in this tab. ${samples.length} sample(s) so far.</p>
    <${ErrorBox} error=${error}/>
    <div class="charts" data-testid="charts">${charts.map((c) => html`<${Chart} key=${c.id} chart=${c}/>`)}</div>
  </div>`;
}
