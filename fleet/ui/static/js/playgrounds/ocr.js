// OCR (POST /v1/images/ocr, multipart): an image from the disk, its text lines with their
// recognition scores.
import { apiForm } from '../api.js';
import { ErrorBox, Field } from '../components/ui.js';
import { useAction } from '../hooks.js';
import { html, useState } from '../html.js';

export default function OcrPlayground({ model }) {
  const [file, setFile] = useState(null);
  const [lines, setLines] = useState(null);

  const { busy, error, submit } = useAction();
  const run = submit(async () => {
    const body = new FormData();
    body.append('model', model.model_uid);
    body.append('image', file, file.name);
    body.append('kwargs', JSON.stringify({ return_dict: true }));
    setLines((await apiForm('/v1/images/ocr', body)).lines);
  });

  return html`<form onSubmit=${run}>
    <${Field} id="ocr-file" label="Image" hint="PNG, JPEG or WebP">
      <input id="ocr-file" type="file" accept="image/png,image/jpeg,image/webp"
        onChange=${(e) => setFile(e.target.files[0] || null)}/></${Field}>
    <div class="actions"><button type="submit" class="primary" disabled=${busy || !file}>
      ${busy ? 'Reading…' : 'Read'}</button></div>
    <${ErrorBox} error=${error}/>
    ${lines ? html`<div class="table-wrap"><table data-testid="ocr-lines">
      <thead><tr><th>text</th><th>score</th></tr></thead>
      <tbody>${lines.map((l) => html`<tr><td>${l.text}</td><td>${l.score.toFixed(3)}</td></tr>`)}</tbody>
    </table></div>` : null}
  </form>`;
}
