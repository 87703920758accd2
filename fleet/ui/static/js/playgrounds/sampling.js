// The sampling settings that chat and completion share.
import { Field } from '../components/ui.js';
import { html } from '../html.js';

export const DEFAULT_SAMPLING = { temperature: '0.7', top_p: '1', max_tokens: '256' };

export function samplingBody(sampling) {
  const body = {};
  for (const name of ['temperature', 'top_p', 'max_tokens']) {
    if (sampling[name] !== '') body[name] = Number(sampling[name]);
  }
  return body;
}

export function SamplingFields({ sampling, onChange }) {
  const input = (name, label, attrs) => html`<${Field} id=${`sampling-${name}`} label=${label}>
    <input id=${`sampling-${name}`} type="number" value=${sampling[name]} ...${attrs}
      onInput=${(e) => onChange({ ...sampling, [name]: e.target.value })}/></${Field}>`;
  return html`<div class="fields">
    ${input('temperature', 'Temperature', { min: 0, max: 2, step: 0.1 })}
    ${input('top_p', 'Top p', { min: 0.01, max: 1, step: 0.05 })}
    ${input('max_tokens', 'Max tokens', { min: 1, step: 1 })}
  </div>`;
}

// Speed of one answer: tokens after the first over the time since the first arrived.
export function answerStats(usage, startedAt, firstAt, endedAt) {
  const completion = usage?.completion_tokens;
  const decode = firstAt && endedAt > firstAt ? (endedAt - firstAt) / 1000 : null;
  return {
    prompt: usage?.prompt_tokens, completion,
    ttft: firstAt ? (firstAt - startedAt) / 1000 : null,
    speed: completion > 1 && decode ? (completion - 1) / decode : null,
  };
}

export function StatsLine({ stats }) {
  if (!stats) return null;
  const parts = [];
  if (stats.prompt !== undefined) parts.push(`${stats.prompt} prompt tokens`);
  if (stats.completion !== undefined) parts.push(`${stats.completion} completion tokens`);
  if (stats.ttft !== null) parts.push(`first token ${stats.ttft.toFixed(2)} s`);
  if (stats.speed) parts.push(`${stats.speed.toFixed(1)} tokens/s`);
  return html`<div class="meta" data-testid="answer-stats">${parts.join(' · ')}</div>`;
}
