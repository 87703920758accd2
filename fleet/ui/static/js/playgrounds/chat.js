// Chat, streamed (POST /v1/chat/completions with stream: true): multi-turn, a system prompt,
// sampling settings, optional tools, images for a model that sees (sent inline as data URLs, so
// the server fetches nothing); reasoning shown apart from the answer, tool calls shown as calls,
// and each answer's token usage and speed.
import { streamEvents } from '../api.js';
import { Field } from '../components/ui.js';
import { html, useRef, useState } from '../html.js';
import { answerStats, DEFAULT_SAMPLING, SamplingFields, samplingBody, StatsLine } from './sampling.js';

// Streamed tool calls arrive in pieces, by index: names once, arguments a few characters at a time.
function mergeToolCalls(calls, deltas) {
  const merged = calls.map((c) => ({ ...c, function: { ...c.function } }));
  for (const delta of deltas) {
    const index = delta.index ?? merged.length;
    const call = merged[index] || (merged[index] = { id: delta.id, type: 'function', function: { name: '', arguments: '' } });
    if (delta.id) call.id = delta.id;
    if (delta.function?.name) call.function.name += delta.function.name;
    if (delta.function?.arguments) call.function.arguments += delta.function.arguments;
  }
  return merged;
}

// A picked file as a data URL, the form an image_url part carries inline.
function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function Thumbnails({ images, onRemove }) {
  if (!images?.length) return null;
  return html`<div class="chat-images">${images.map((image, index) => html`<figure class="chat-image">
    <img src=${image.url} alt=${image.name} title=${image.name} data-testid="chat-image"/>
    ${onRemove ? html`<button type="button" class="small" aria-label=${`Remove ${image.name}`}
      onClick=${() => onRemove(index)}>×</button>` : null}</figure>`)}</div>`;
}

function Message({ message }) {
  return html`<div class=${`message ${message.role}`} data-testid=${`message-${message.role}`}>
    <${Thumbnails} images=${message.images}/>
    ${message.reasoning ? html`<details class="reasoning" open=${message.streaming}>
      <summary>Reasoning</summary><div data-testid="reasoning">${message.reasoning}</div></details>` : null}
    <div data-testid="message-content">${message.content}${message.streaming && !message.content ? '…' : ''}</div>
    ${(message.tool_calls || []).map((call) => html`<div class="tool-call" data-testid="tool-call">
      ${call.function.name}(${call.function.arguments})</div>`)}
    ${message.error ? html`<div class="error-text small" role="alert">${message.error}</div>` : null}
    <${StatsLine} stats=${message.stats}/>
  </div>`;
}

function toApi(messages, system) {
  const result = system.trim() ? [{ role: 'system', content: system }] : [];
  for (const m of messages) {
    if (m.error && !m.content) continue;
    // A user's images go as image_url parts after the text, in the order they were picked.
    const content = m.images?.length
      ? [{ type: 'text', text: m.content }, ...m.images.map((image) => ({ type: 'image_url', image_url: { url: image.url } }))]
      : m.content;
    const entry = { role: m.role, content };
    if (m.tool_calls?.length) entry.tool_calls = m.tool_calls;
    result.push(entry);
  }
  return result;
}

export default function ChatPlayground({ model }) {
  const [system, setSystem] = useState('');
  const [messages, setMessages] = useState([]);
  const [input, setInput] = useState('');
  const [sampling, setSampling] = useState(DEFAULT_SAMPLING);
  const [tools, setTools] = useState('');
  const [streaming, setStreaming] = useState(false);
  const controller = useRef(null);
  const [images, setImages] = useState([]);
  const [imageError, setImageError] = useState('');
  const supportsTools = (model.model_ability || []).includes('tools');
  const seesImages = (model.model_ability || []).includes('vision');

  const updateLast = (change) => setMessages((old) => [...old.slice(0, -1), { ...old[old.length - 1], ...change(old[old.length - 1]) }]);

  const send = async () => {
    const text = input.trim();
    if (!text || streaming) return;
    const history = [...messages, { role: 'user', content: text, images }];
    setMessages([...history, { role: 'assistant', content: '', reasoning: '', streaming: true }]);
    setInput('');
    setImages([]);
    setStreaming(true);
    controller.current = new AbortController();
    const body = { model: model.model_uid, messages: toApi(history, system), stream: true,
      stream_options: { include_usage: true }, ...samplingBody(sampling) };
    const startedAt = performance.now();
    let firstAt = null;
    let usage = null;
    try {
      if (tools.trim()) body.tools = JSON.parse(tools);
      for await (const chunk of streamEvents('/v1/chat/completions', body, controller.current.signal)) {
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices?.[0]?.delta;
        if (!delta) continue;
        if (firstAt === null && (delta.content || delta.reasoning_content || delta.tool_calls)) firstAt = performance.now();
        updateLast((last) => ({
          content: last.content + (delta.content || ''),
          reasoning: last.reasoning + (delta.reasoning_content || ''),
          tool_calls: delta.tool_calls ? mergeToolCalls(last.tool_calls || [], delta.tool_calls) : last.tool_calls,
        }));
      }
    } catch (error) {
      if (error.name !== 'AbortError') updateLast(() => ({ error: error.message }));
    } finally {
      const stats = answerStats(usage, startedAt, firstAt, performance.now());
      updateLast(() => ({ streaming: false, stats }));
      setStreaming(false);
    }
  };

  const pickImages = async (event) => {
    const files = [...event.target.files];
    event.target.value = '';
    setImageError('');
    try {
      const picked = await Promise.all(files.map(async (file) => ({ name: file.name, url: await readAsDataUrl(file) })));
      setImages((old) => [...old, ...picked]);
    } catch (error) {
      setImageError(`Could not read the image: ${error.message}`);
    }
  };

  const onKey = (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  };

  return html`<div class="two">
    <section>
      <div class="chat-log" aria-live="polite" data-testid="chat-log">
        ${messages.length === 0 ? html`<p class="muted">Ask ${model.model_uid} something.</p>` : null}
        ${messages.map((m) => html`<${Message} message=${m}/>`)}
      </div>
      <form onSubmit=${(e) => { e.preventDefault(); send(); }}>
        <label for="chat-input" class="small muted">Message (Enter sends, Shift+Enter for a new line)</label>
        <textarea id="chat-input" rows="3" value=${input} onInput=${(e) => setInput(e.target.value)}
          onKeyDown=${onKey} placeholder="Type a message"></textarea>
        ${seesImages ? html`<div class="small">
          <label for="chat-images" class="muted">Images (${model.model_uid} sees them)</label>
          <input id="chat-images" type="file" accept="image/png,image/jpeg,image/webp,image/gif" multiple onChange=${pickImages}/>
          <${Thumbnails} images=${images} onRemove=${(index) => setImages((old) => old.filter((_, i) => i !== index))}/>
          ${imageError ? html`<div class="error-text small" role="alert">${imageError}</div>` : null}
        </div>` : null}
        <div class="actions">
          <button type="button" onClick=${() => setMessages([])} disabled=${streaming}>Clear</button>
          ${streaming ? html`<button type="button" onClick=${() => controller.current?.abort()}>Stop</button>` : null}
          <button type="submit" class="primary" id="chat-send" disabled=${streaming || !input.trim()}>Send</button>
        </div>
      </form>
    </section>
    <aside class="card">
      <${Field} id="chat-system" label="System prompt">
        <textarea id="chat-system" rows="3" value=${system} onInput=${(e) => setSystem(e.target.value)}
          placeholder="You are a helpful assistant."></textarea></${Field}>
      <${SamplingFields} sampling=${sampling} onChange=${setSampling}/>
      ${supportsTools ? html`<${Field} id="chat-tools" label="Tools (JSON list, OpenAI's shape)">
        <textarea id="chat-tools" rows="4" value=${tools} onInput=${(e) => setTools(e.target.value)}
          placeholder='[{"type": "function", "function": {"name": "get_weather", "parameters": {...}}}]'></textarea></${Field}>` : null}
    </aside>
  </div>`;
}
