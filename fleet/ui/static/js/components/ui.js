// Small building blocks shared by the pages.
import { html, useEffect, useRef } from '../html.js';

export function ErrorBox({ error, title }) {
  if (!error) return null;
  const message = typeof error === 'string' ? error : error.message;
  return html`<div class="error" role="alert">
    ${title ? html`<strong>${title}</strong> ` : null}${message}
  </div>`;
}

export function Loading({ what = '' }) {
  return html`<p class="muted" aria-busy="true">Loading${what ? ` ${what}` : ''}…</p>`;
}

export function ProgressBar({ value, label }) {
  const pct = Math.max(0, Math.min(100, Math.round((value || 0) * 100)));
  return html`<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"
      aria-valuenow=${pct} aria-label=${label || 'progress'}>
    <div class="progress-fill" style=${`width:${pct}%`}></div>
    <span class="progress-text">${label ? `${label} · ` : ''}${pct}%</span>
  </div>`;
}

// A used/total bar (memory, CPU); turns amber then red as it fills.
export function Meter({ used, total, label, text }) {
  const pct = total ? Math.min(100, (100 * used) / total) : 0;
  const level = pct > 90 ? 'high' : pct > 70 ? 'mid' : 'low';
  return html`<div class="meter">
    <div class="meter-label"><span>${label}</span><span>${text}</span></div>
    <div class="meter-bar" role="meter" aria-label=${label} aria-valuemin="0" aria-valuemax="100"
        aria-valuenow=${Math.round(pct)}>
      <div class=${`meter-fill ${level}`} style=${`width:${pct}%`}></div>
    </div>
  </div>`;
}

export function StateBadge({ state }) {
  return html`<span class=${`badge state-${state || 'unknown'}`}>${state || 'unknown'}</span>`;
}

export function Chips({ items }) {
  return html`<span class="chips">${(items || []).map((i) => html`<span class="chip">${i}</span>`)}</span>`;
}

// A modal question: <dialog> traps the focus and closes on Escape by itself.
export function ConfirmDialog({ open, title, children, confirmLabel = 'Confirm', onConfirm, onCancel }) {
  const ref = useRef(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return html`<dialog ref=${ref} class="dialog" onClose=${() => open && onCancel()}
      aria-labelledby="dialog-title">
    <h2 id="dialog-title">${title}</h2>
    <div>${children}</div>
    <div class="actions">
      <button type="button" onClick=${onCancel}>Cancel</button>
      <button type="button" class="danger" onClick=${onConfirm}>${confirmLabel}</button>
    </div>
  </dialog>`;
}

export function Field({ label, hint, children, id }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children}
    ${hint ? html`<small class="hint">${hint}</small>` : null}
  </div>`;
}

export function Json({ value }) {
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}
