// Completion, streamed (POST /v1/completions): the model continues the prompt.
import { streamEvents } from '../api.js';
import { ErrorBox } from '../components/ui.js';
import { html, useRef, useState } from '../html.js';
import { answerStats, DEFAULT_SAMPLING, SamplingFields, samplingBody, StatsLine } from './sampling.js';

export default function CompletionPlayground({ model }) {
  const [prompt, setPrompt] = useState('Once upon a time');
  const [output, setOutput] = useState('');
  const [sampling, setSampling] = useState(DEFAULT_SAMPLING);
  const [stats, setStats] = useState(null);
  const [error, setError] = useState(null);
  const [streaming, setStreaming] = useState(false);
  const controller = useRef(null);

  const run = async (event) => {
    event.preventDefault();
    setOutput('');
    setError(null);
    setStats(null);
    setStreaming(true);
    controller.current = new AbortController();
    const startedAt = performance.now();
    let firstAt = null;
    let usage = null;
    try {
      const body = { model: model.model_uid, prompt, stream: true,
        stream_options: { include_usage: true }, ...samplingBody(sampling) };
      for await (const chunk of streamEvents('/v1/completions', body, controller.current.signal)) {
        if (chunk.usage) usage = chunk.usage;
        const text = chunk.choices?.[0]?.text;
        if (text) {
          if (firstAt === null) firstAt = performance.now();
          setOutput((old) => old + text);
        }
      }
    } catch (caught) {
      if (caught.name !== 'AbortError') setError(caught);
    } finally {
      setStats(answerStats(usage, startedAt, firstAt, performance.now()));
      setStreaming(false);
    }
  };

  return html`<form class="two" onSubmit=${run}>
    <section>
      <label for="completion-prompt" class="small muted">Prompt</label>
      <textarea id="completion-prompt" rows="5" value=${prompt} onInput=${(e) => setPrompt(e.target.value)}></textarea>
      <div class="actions">
        ${streaming ? html`<button type="button" onClick=${() => controller.current?.abort()}>Stop</button>` : null}
        <button type="submit" class="primary" disabled=${streaming || !prompt}>Complete</button>
      </div>
      <${ErrorBox} error=${error}/>
      ${output || streaming ? html`<div class="message assistant" data-testid="completion-output">
        <strong>${prompt}</strong>${output}<${StatsLine} stats=${stats}/></div>` : null}
    </section>
    <aside class="card"><${SamplingFields} sampling=${sampling} onChange=${setSampling}/></aside>
  </form>`;
}
