// Asks for an API key when the cluster has keys on. The key is tried (GET /v1/auth/me) before
// it is kept, so a wrong one is refused here with the server's reason.
import { api } from '../api.js';
import { html, useState } from '../html.js';
import { setKey, setRights } from '../session.js';

export function KeyPrompt({ expired }) {
  const [key, setKeyText] = useState('');
  const [error, setError] = useState(expired ? 'Your API key was refused; enter it again.' : null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    const candidate = key.trim();
    if (!candidate) return;
    setBusy(true);
    try {
      const rights = await api('/v1/auth/me', { key: candidate });
      setKey(candidate);
      setRights(rights);
    } catch (caught) {
      setError(caught.status === 401 ? `This key was refused: ${caught.message}` : caught.message);
    } finally {
      setBusy(false);
    }
  };

  return html`<main class="login" id="main">
    <form class="card narrow" onSubmit=${submit} aria-labelledby="login-title">
      <h1 id="login-title">Fleet</h1>
      <p>This cluster needs an API key. It is kept in this tab only, until you close it.</p>
      <label for="api-key">API key</label>
      <input id="api-key" type="password" autocomplete="off" autofocus value=${key}
        onInput=${(e) => setKeyText(e.target.value)} placeholder="sk-…" required/>
      ${error ? html`<div class="error" role="alert">${error}</div>` : null}
      <button type="submit" class="primary" disabled=${busy}>${busy ? 'Checking…' : 'Sign in'}</button>
    </form>
  </main>`;
}
