// Text to image (POST /v1/images/generations, answered as base64 PNG).
import { api } from '../api.js';
import { ErrorBox, Field } from '../components/ui.js';
import { useAction } from '../hooks.js';
import { html, useState } from '../html.js';

const SIZES = ['256x256', '512x512', '768x768', '1024x1024'];

export default function ImagePlayground({ model }) {
  const [form, setForm] = useState({ prompt: 'A lighthouse on a cliff at dawn', size: '512x512',
    steps: '', seed: '', negative: '' });
  const [images, setImages] = useState([]);
  const [took, setTook] = useState(null);
  const set = (name) => (e) => setForm({ ...form, [name]: e.target.value });

  const { busy, error, submit } = useAction();
  const run = submit(async () => {
    const started = performance.now();
    const body = { model: model.model_uid, prompt: form.prompt, size: form.size, n: 1, response_format: 'b64_json' };
    if (form.steps) body.num_inference_steps = Number(form.steps);
    if (form.seed) body.seed = Number(form.seed);
    if (form.negative) body.negative_prompt = form.negative;
    const answer = await api('/v1/images/generations', { method: 'POST', body });
    setImages(answer.data.map((d) => d.b64_json));
    setTook((performance.now() - started) / 1000);
  });

  return html`<form class="two" onSubmit=${run}>
    <section>
      <${Field} id="image-prompt" label="Prompt">
        <textarea id="image-prompt" rows="3" value=${form.prompt} onInput=${set('prompt')}></textarea></${Field}>
      <div class="actions"><button type="submit" class="primary" disabled=${busy || !form.prompt}>
        ${busy ? 'Generating…' : 'Generate'}</button></div>
      <${ErrorBox} error=${error}/>
      ${images.map((b64) => html`<img class="generated-image" data-testid="generated-image"
        src=${`data:image/png;base64,${b64}`} alt=${form.prompt}/>`)}
      ${took ? html`<p class="small muted">${took.toFixed(1)} s</p>` : null}
    </section>
    <aside class="card">
      <${Field} id="image-size" label="Size"><select id="image-size" value=${form.size} onChange=${set('size')}>
        ${SIZES.map((s) => html`<option value=${s}>${s}</option>`)}</select></${Field}>
      <${Field} id="image-steps" label="Steps" hint="empty: the model's default">
        <input id="image-steps" type="number" min="1" value=${form.steps} onInput=${set('steps')}/></${Field}>
      <${Field} id="image-seed" label="Seed"><input id="image-seed" type="number" min="0" value=${form.seed} onInput=${set('seed')}/></${Field}>
      <${Field} id="image-negative" label="Negative prompt">
        <input id="image-negative" value=${form.negative} onInput=${set('negative')}/></${Field}>
    </aside>
  </form>`;
}
