// Rerank (POST /v1/rerank): documents ranked against a query, with their scores.
import { api } from '../api.js';
import { ErrorBox, Field } from '../components/ui.js';
import { html, useState } from '../html.js';

const QUERY = 'What is the capital of France?';
const DOCUMENTS = 'Paris is the capital and largest city of France.\nBananas are rich in potassium.\nFrance borders Spain, Italy and Germany.';

export default function RerankPlayground({ model }) {
  const [query, setQuery] = useState(QUERY);
  const [documents, setDocuments] = useState(DOCUMENTS);
  const [topN, setTopN] = useState('');
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const run = async (event) => {
    event.preventDefault();
    const docs = documents.split('\n').map((d) => d.trim()).filter(Boolean);
    setBusy(true);
    setError(null);
    try {
      const body = { model: model.model_uid, query, documents: docs, return_documents: true };
      if (topN) body.top_n = Number(topN);
      const answer = await api('/v1/rerank', { method: 'POST', body });
      setResult({ docs, results: answer.results });
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };

  const top = result ? Math.max(...result.results.map((r) => r.relevance_score), 1e-9) : 1;
  return html`<form onSubmit=${run}>
    <${Field} id="rerank-query" label="Query">
      <input id="rerank-query" value=${query} onInput=${(e) => setQuery(e.target.value)}/></${Field}>
    <${Field} id="rerank-documents" label="Documents, one per line">
      <textarea id="rerank-documents" rows="5" value=${documents} onInput=${(e) => setDocuments(e.target.value)}></textarea></${Field}>
    <${Field} id="rerank-top" label="Top n" hint="empty: all">
      <input id="rerank-top" type="number" min="1" value=${topN} onInput=${(e) => setTopN(e.target.value)}/></${Field}>
    <div class="actions"><button type="submit" class="primary" disabled=${busy}>${busy ? 'Ranking…' : 'Rerank'}</button></div>
    <${ErrorBox} error=${error}/>
    ${result ? html`<ol data-testid="rerank-results">${result.results.map((r) => html`<li>
      <div>${r.document?.text ?? result.docs[r.index]}</div>
      <div class="small muted">score ${r.relevance_score.toFixed(4)} · document ${r.index + 1}</div>
      <div class="score-bar" style=${`width:${Math.max(2, (100 * r.relevance_score) / top)}%`}></div>
    </li>`)}</ol>` : null}
  </form>`;
}
