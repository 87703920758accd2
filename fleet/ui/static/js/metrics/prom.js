// Reads Prometheus' text format (what GET /metrics answers): metric name -> [{labels, value}].
// Comments and the *_created series (timestamps, not data) are skipped.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescape(value) {
  return value.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
}

export function parsePrometheus(text) {
  const families = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const found = LINE.exec(line);
    if (!found || found[1].endsWith('_created')) continue;
    const labels = {};
    if (found[2]) for (const [, name, value] of found[2].matchAll(LABEL)) labels[name] = unescape(value);
    const value = Number(found[3]);
    if (!families.has(found[1])) families.set(found[1], []);
    families.get(found[1]).push({ labels, value });
  }
  return families;
}

// The quantile `q` of a histogram from its cumulative buckets [{le, count}] (Prometheus'
// histogram_quantile: linear within the bucket that holds the rank).
export function histogramQuantile(q, buckets) {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const { le, count } of sorted) {
    if (count >= rank) {
      if (le === Infinity) return lower;
      return count === below ? le : lower + ((le - lower) * (rank - below)) / (count - below);
    }
    lower = le;
    below = count;
  }
  return lower;
}
