// The metrics page's history, kept in the browser: a sample of /metrics every few seconds
// (the last 10 minutes), and the series its charts draw, worked out from consecutive samples:
// rates of counters, quantiles of the histograms' new observations, gauges as they are.
import { histogramQuantile } from './prom.js';

export const KEEP_SECONDS = 600;
const samples = [];

export function addSample(time, families) {
  samples.push({ time, families });
  while (samples.length && samples[0].time < time - KEEP_SECONDS) samples.shift();
}

export function getSamples() {
  return samples;
}

function sumBy(rows, keyOf) {
  const sums = new Map();
  for (const row of rows || []) {
    const key = keyOf(row.labels);
    if (key === null) continue;
    sums.set(key, (sums.get(key) || 0) + row.value);
  }
  return sums;
}

// [{key -> value}] per sample pair, from a function of (previous, current, seconds between).
function perInterval(list, compute) {
  const points = [];
  for (let i = 1; i < list.length; i += 1) {
    points.push({ time: list[i].time, values: compute(list[i - 1], list[i], list[i].time - list[i - 1].time) });
  }
  return points;
}

function rates(list, metric, keyOf) {
  return perInterval(list, (before, after, seconds) => {
    const old = sumBy(before.families.get(metric), keyOf);
    const now = sumBy(after.families.get(metric), keyOf);
    const values = new Map();
    for (const [key, value] of now) {
      const delta = value - (old.get(key) || 0);
      values.set(key, delta >= 0 ? delta / seconds : null); // a reset (model relaunched): no point
    }
    return values;
  });
}

function quantiles(list, metric, q, keyOf) {
  return perInterval(list, (before, after) => {
    const old = sumBy(before.families.get(metric), (l) => `${keyOf(l)}\u0000${l.le}`);
    const now = sumBy(after.families.get(metric), (l) => `${keyOf(l)}\u0000${l.le}`);
    const buckets = new Map();
    for (const [joined, count] of now) {
      const [key, le] = joined.split('\u0000');
      if (key === 'null') continue;
      if (!buckets.has(key)) buckets.set(key, []);
      buckets.get(key).push({ le: le === '+Inf' ? Infinity : Number(le), count: count - (old.get(joined) || 0) });
    }
    const values = new Map();
    for (const [key, list_] of buckets) values.set(key, histogramQuantile(q, list_));
    return values;
  });
}

function gauges(list, metric, keyOf) {
  return list.map((s) => ({ time: s.time, values: sumBy(s.families.get(metric), keyOf) }));
}

// Points -> {xs, series: [{label, values}]} for one chart (keys seen in any point).
function toChart(points, suffix = '') {
  const keys = [...new Set(points.flatMap((p) => [...p.values.keys()]))].sort();
  return {
    xs: points.map((p) => p.time),
    series: keys.map((key) => ({ label: `${key}${suffix}`, values: points.map((p) => p.values.get(key) ?? null) })),
  };
}

function merge(...charts) {
  return { xs: charts[0].xs, series: charts.flatMap((c) => c.series) };
}

export function buildCharts(modelFilter) {
  const byModel = (l) => (!modelFilter || l.model === modelFilter ? l.model : null);
  const latency = 'fleet_model_request_latency_seconds_bucket';
  return [
    { id: 'requests', title: 'Requests per second', unit: '/s', ...toChart(rates(samples, 'fleet_model_requests_total', byModel)) },
    { id: 'tokens', title: 'Generated tokens per second', unit: '/s', ...toChart(rates(samples, 'fleet_model_generated_tokens_total', byModel)) },
    { id: 'ttft', title: 'Time to first token, p50', unit: 's',
      ...toChart(quantiles(samples, 'fleet_model_time_to_first_token_seconds_bucket', 0.5, byModel)) },
    { id: 'latency', title: 'Request latency, p50 and p99', unit: 's',
      ...merge(toChart(quantiles(samples, latency, 0.5, byModel), ' p50'),
        toChart(quantiles(samples, latency, 0.99, byModel), ' p99')) },
    { id: 'errors', title: 'Errors per second', unit: '/s', ...toChart(rates(samples, 'fleet_model_errors_total', byModel)) },
    { id: 'worker-memory', title: 'Memory used per worker', unit: 'bytes',
      ...merge(toChart(gauges(samples, 'fleet_worker_memory_bytes', (l) => (l.state === 'used' ? `${l.worker} RAM` : null))),
        toChart(gauges(samples, 'fleet_worker_gpu_memory_bytes', (l) => (l.state === 'used' ? `${l.worker} GPU ${l.gpu}` : null)))) },
    { id: 'replica-memory', title: 'Memory per replica', unit: 'bytes',
      ...toChart(gauges(samples, 'fleet_replica_memory_bytes', (l) => (!modelFilter || l.model === modelFilter ? l.replica : null))) },
  ];
}
