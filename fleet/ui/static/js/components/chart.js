// A time-series chart on uPlot, loaded the first time a chart is drawn (it is the biggest file
// of the UI, and only the metrics page needs it).
import { bytes, number } from '../format.js';
import { html, useEffect, useRef } from '../html.js';

const COLOURS = ['#2457c5', '#d0551f', '#1f7a3f', '#8a3ffc', '#b3261e', '#00838f', '#a86500', '#5b6470'];
let loading = null;

function loadUPlot() {
  if (!loading) {
    const link = document.createElement('link');
    link.rel = 'stylesheet';
    link.href = '/ui/vendor/uPlot.min.css';
    document.head.appendChild(link);
    loading = import('/ui/vendor/uPlot.esm.js').then((module) => module.default);
  }
  return loading;
}

function formatter(unit) {
  if (unit === 'bytes') return (v) => (v === null ? '–' : bytes(v));
  if (unit === 's') return (v) => (v === null ? '–' : `${number(v, 3)} s`);
  return (v) => (v === null ? '–' : `${number(v, 2)}${unit}`);
}

export function Chart({ chart }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = useRef('');
  useEffect(() => {
    let cancelled = false;
    loadUPlot().then((UPlot) => {
      if (cancelled || !box.current) return;
      const data = [chart.xs, ...chart.series.map((s) => s.values)];
      const labels = chart.series.map((s) => s.label).join('|');
      if (plot.current && shape.current === labels) {
        plot.current.setData(data);
        return;
      }
      plot.current?.destroy();
      shape.current = labels;
      const format = formatter(chart.unit);
      plot.current = new UPlot({
        width: Math.max(260, box.current.clientWidth), height: 200,
        series: [{}, ...chart.series.map((s, i) => ({ label: s.label, stroke: COLOURS[i % COLOURS.length],
          width: 2, spanGaps: false, value: (u, v) => format(v) }))],
        axes: [{}, { values: (u, ticks) => ticks.map(format), size: 84 }],
        scales: { x: { time: true } },
      }, data, box.current);
    });
    return () => { cancelled = true; };
  }, [chart]);
  useEffect(() => {
    const resize = () => plot.current && box.current
      && plot.current.setSize({ width: Math.max(260, box.current.clientWidth), height: 200 });
    window.addEventListener('resize', resize);
    return () => { window.removeEventListener('resize', resize); plot.current?.destroy(); plot.current = null; };
  }, []);
  return html`<figure class="card chart" data-testid=${`chart-${chart.id}`}>
    <figcaption><strong>${chart.title}</strong>
      ${chart.series.length === 0 ? html`<span class="muted small"> · nothing yet</span>` : null}</figcaption>
    <div ref=${box}></div>
  </figure>`;
}
