import { html } from '../html.js';

export default function NotFound({ path }) {
  return html`<div><h1>Not found</h1><p>No page at <code>${path}</code>.
    <a href="/ui/cluster">Go to the cluster</a>.</p></div>`;
}
