// Text to speech (POST /v1/audio/speech): the audio played in the page, with the time to its
// first bytes (the route streams it sentence by sentence) and to its end.
import { apiFile } from '../api.js';
import { ErrorBox, Field } from '../components/ui.js';
import { useAction } from '../hooks.js';
import { html, useEffect, useState } from '../html.js';

const FORMATS = ['mp3', 'wav', 'opus', 'aac', 'flac'];
// OpenAI's names, which every voice model here answers to; its own names work too.
const OPENAI_VOICES = ['alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'nova', 'onyx', 'sage', 'shimmer', 'verse'];

export default function SpeechPlayground({ model }) {
  const [form, setForm] = useState({ input: 'Fleet serves open models on your own machines. This sentence was spoken by one of them.',
    voice: '', format: 'mp3', speed: '1' });
  const [audio, setAudio] = useState(null);
  const set = (name) => (e) => setForm({ ...form, [name]: e.target.value });
  useEffect(() => () => audio && URL.revokeObjectURL(audio.url), [audio]);

  const { busy, error, submit } = useAction();
  const run = submit(async () => {
    const body = { model: model.model_uid, input: form.input, response_format: form.format,
      speed: Number(form.speed) || 1 };
    if (form.voice) body.voice = form.voice;
    const answer = await apiFile('/v1/audio/speech', body);
    setAudio({ ...answer, url: URL.createObjectURL(answer.blob) });
  });

  return html`<form class="two" onSubmit=${run}>
    <section>
      <${Field} id="speech-input" label="Text">
        <textarea id="speech-input" rows="4" value=${form.input} onInput=${set('input')}></textarea></${Field}>
      <div class="actions"><button type="submit" class="primary" disabled=${busy || !form.input.trim()}>
        ${busy ? 'Speaking…' : 'Speak'}</button></div>
      <${ErrorBox} error=${error}/>
      ${audio ? html`<audio data-testid="speech-audio" controls autoplay src=${audio.url}></audio>
        <p class="small muted" data-testid="speech-stats">first audio after ${Math.round(audio.firstMs)} ms ·
          all in ${(audio.totalMs / 1000).toFixed(2)} s · ${(audio.blob.size / 1024).toFixed(0)} KB</p>` : null}
    </section>
    <aside class="card">
      <${Field} id="speech-voice" label="Voice" hint="empty: the model's first voice">
        <input id="speech-voice" list="speech-voices" value=${form.voice} onInput=${set('voice')}/>
        <datalist id="speech-voices">${OPENAI_VOICES.map((v) => html`<option value=${v}/>`)}</datalist></${Field}>
      <${Field} id="speech-format" label="Format"><select id="speech-format" value=${form.format} onChange=${set('format')}>
        ${FORMATS.map((f) => html`<option value=${f}>${f}</option>`)}</select></${Field}>
      <${Field} id="speech-speed" label="Speed" hint="0.25 to 4">
        <input id="speech-speed" type="number" min="0.25" max="4" step="0.05" value=${form.speed} onInput=${set('speed')}/></${Field}>
    </aside>
  </form>`;
}
