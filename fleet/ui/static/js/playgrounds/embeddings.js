// Embeddings (POST /v1/embeddings): one text per line, and the cosine similarity of every pair.
import { api } from '../api.js';
import { ErrorBox } from '../components/ui.js';
import { html, useState } from '../html.js';

const EXAMPLE = 'The cat sits on the mat.\nA kitten is resting on a rug.\nStock markets fell sharply today.';

export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

function shade(value) {
  // Similar pairs in the accent colour, unrelated ones faint.
  const alpha = Math.max(0, Math.min(1, value)) * 0.6;
  return `background: rgb(36 87 197 / ${alpha.toFixed(2)})`;
}

function Matrix({ texts, vectors }) {
  const short = (t) => (t.length > 28 ? `${t.slice(0, 27)}…` : t);
  return html`<div class="table-wrap"><table class="matrix" data-testid="similarity-matrix">
    <caption class="small muted">Cosine similarity</caption>
    <thead><tr><th></th>${texts.map((t, i) => html`<th title=${t}>${i + 1}</th>`)}</tr></thead>
    <tbody>${vectors.map((a, i) => html`<tr>
      <th class="small" title=${texts[i]}>${i + 1}. ${short(texts[i])}</th>
      ${vectors.map((b, j) => {
        const value = cosine(a, b);
        return html`<td style=${shade(value)} data-testid=${`cell-${i}-${j}`}>${value.toFixed(3)}</td>`;
      })}</tr>`)}</tbody>
  </table></div>`;
}

export default function EmbeddingsPlayground({ model }) {
  const [text, setText] = useState(EXAMPLE);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const run = async (event) => {
    event.preventDefault();
    const texts = text.split('\n').map((t) => t.trim()).filter(Boolean);
    setBusy(true);
    setError(null);
    const started = performance.now();
    try {
      const answer = await api('/v1/embeddings', { method: 'POST', body: { model: model.model_uid, input: texts } });
      const vectors = answer.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
      setResult({ texts, vectors, usage: answer.usage, ms: performance.now() - started });
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };

  return html`<form onSubmit=${run}>
    <label for="embed-input" class="small muted">Texts, one per line</label>
    <textarea id="embed-input" rows="5" value=${text} onInput=${(e) => setText(e.target.value)}></textarea>
    <div class="actions"><button type="submit" class="primary" id="embed-run" disabled=${busy}>
      ${busy ? 'Embedding…' : 'Embed'}</button></div>
    <${ErrorBox} error=${error}/>
    ${result ? html`<section data-testid="embeddings-result">
      <p class="small muted">${result.vectors.length} vectors of ${result.vectors[0]?.length} dimensions ·
        ${result.usage?.prompt_tokens} tokens · ${result.ms.toFixed(0)} ms</p>
      <${Matrix} texts=${result.texts} vectors=${result.vectors}/>
    </section>` : null}
  </form>`;
}
