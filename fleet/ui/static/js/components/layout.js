// The frame of every page: the navigation (only what the key may see), who is signed in, and
// the main region that the skip link and page changes move the focus to.
import { html, useEffect, useRef } from '../html.js';
import { can, getRights, signOut } from '../session.js';

const NAV = [
  ['/ui/cluster', 'Cluster', null],
  ['/ui/catalogue', 'Catalogue', 'models:list'],
  ['/ui/models', 'Models', 'models:list'],
  ['/ui/registrations', 'Registrations', 'models:list'],
  ['/ui/metrics', 'Metrics', 'metrics:read'],
  ['/ui/keys', 'Keys', 'admin'],
  ['/ui/usage', 'Usage', 'admin'],
];

function current(path, target) {
  if (target === '/ui/cluster') return path === '/ui/' || path.startsWith('/ui/cluster');
  if (target === '/ui/models') return path.startsWith('/ui/models') || path.startsWith('/ui/playground');
  return path.startsWith(target);
}

export function Layout({ path, children }) {
  const rights = getRights();
  const main = useRef(null);
  const first = useRef(true);
  useEffect(() => {
    // After a page change (not the first load), move the focus as a page load would.
    if (first.current) first.current = false;
    else main.current?.focus({ preventScroll: true });
  }, [path]);
  return html`<div class="shell">
    <header class="top">
      <a class="brand" href="/ui/cluster" aria-label="Fleet, cluster page">
        <img src="/ui/favicon.svg" alt="" width="22" height="22"/> Fleet</a>
      <nav aria-label="Main">
        ${NAV.filter(([, , permission]) => !permission || can(permission)).map(([target, label]) => html`
          <a href=${target} aria-current=${current(path, target) ? 'page' : undefined}>${label}</a>`)}
      </nav>
      ${rights?.auth ? html`<div class="who">
        <span class="muted" title="the API key of this tab">${rights.holder}</span>
        <button type="button" class="small" onClick=${signOut}>Sign out</button>
      </div>` : null}
    </header>
    <main id="main" ref=${main} tabindex="-1">${children}</main>
  </div>`;
}
