// Speech to text (POST /v1/audio/transcriptions or /translations, multipart): an audio file
// from the disk, its text and its timed segments.
import { apiForm } from '../api.js';
import { ErrorBox, Field } from '../components/ui.js';
import { useAction } from '../hooks.js';
import { html, useState } from '../html.js';

function clock(seconds) {
  const whole = Math.floor(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, '0')}.${String(Math.round((seconds - whole) * 10))}`;
}

export default function TranscriptionPlayground({ model }) {
  const [file, setFile] = useState(null);
  const [form, setForm] = useState({ task: 'transcriptions', language: '', prompt: '' });
  const [answer, setAnswer] = useState(null);
  const set = (name) => (e) => setForm({ ...form, [name]: e.target.value });

  const { busy, error, submit } = useAction();
  const run = submit(async () => {
    const started = performance.now();
    const body = new FormData();
    body.append('model', model.model_uid);
    body.append('file', file, file.name);
    body.append('response_format', 'verbose_json');
    if (form.language) body.append('language', form.language);
    if (form.prompt) body.append('prompt', form.prompt);
    const result = await apiForm(`/v1/audio/${form.task}`, body);
    setAnswer({ ...result, tookMs: performance.now() - started });
  });

  return html`<form class="two" onSubmit=${run}>
    <section>
      <${Field} id="transcription-file" label="Audio file" hint="mp3, wav, m4a, ogg, webm, flac...">
        <input id="transcription-file" type="file" accept="audio/*,video/*"
          onChange=${(e) => setFile(e.target.files[0] || null)}/></${Field}>
      <div class="actions"><button type="submit" class="primary" disabled=${busy || !file}>
        ${busy ? 'Listening…' : 'Transcribe'}</button></div>
      <${ErrorBox} error=${error}/>
      ${answer ? html`<p data-testid="transcript-text">${answer.text}</p>
        <p class="small muted">${answer.language ? `${answer.language} · ` : ''}${answer.duration?.toFixed(1)} s of audio in ${(answer.tookMs / 1000).toFixed(2)} s</p>
        <div class="table-wrap"><table data-testid="transcript-segments">
          <thead><tr><th>from</th><th>to</th><th>text</th></tr></thead>
          <tbody>${(answer.segments || []).map((s) => html`<tr>
            <td>${clock(s.start)}</td><td>${clock(s.end)}</td><td>${s.text}</td></tr>`)}</tbody>
        </table></div>` : null}
    </section>
    <aside class="card">
      <${Field} id="transcription-task" label="Task"><select id="transcription-task" value=${form.task} onChange=${set('task')}>
        <option value="transcriptions">Transcribe (its own language)</option>
        <option value="translations">Translate to English</option></select></${Field}>
      <${Field} id="transcription-language" label="Language" hint="empty: detected (multilingual models)">
        <input id="transcription-language" value=${form.language} onInput=${set('language')} placeholder="en"/></${Field}>
      <${Field} id="transcription-prompt" label="Prompt" hint="words to expect: names, terms">
        <input id="transcription-prompt" value=${form.prompt} onInput=${set('prompt')}/></${Field}>
    </aside>
  </form>`;
}
