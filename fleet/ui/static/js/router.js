// Pages by URL: each page has its own address under /ui/ (the server answers index.html for
// every one of them), loaded on first visit so that the first page costs only its own code.
import { useEffect, useState } from './html.js';

const ROUTES = [
  ['/ui/', () => import('./pages/cluster.js')],
  ['/ui/cluster', () => import('./pages/cluster.js')],
  ['/ui/catalogue', () => import('./pages/catalogue.js')],
  ['/ui/catalogue/:type/:name', () => import('./pages/family.js')],
  ['/ui/models', () => import('./pages/models.js')],
  ['/ui/models/:uid', () => import('./pages/model.js')],
  ['/ui/playground/:uid', () => import('./pages/playground.js')],
  ['/ui/playground/:uid/:kind', () => import('./pages/playground.js')],
  ['/ui/registrations', () => import('./pages/registrations.js')],
  ['/ui/registrations/:type/:name', () => import('./pages/registration.js')],
  ['/ui/metrics', () => import('./pages/metrics.js')],
];

function compile(pattern) {
  const names = [];
  const source = pattern.replace(/:(\w+)/g, (_, name) => {
    names.push(name);
    return '([^/]+)';
  });
  return { regex: new RegExp(`^${source}/?$`), names };
}

const COMPILED = ROUTES.map(([pattern, load]) => ({ ...compile(pattern), pattern, load }));

export function match(pathname) {
  for (const route of COMPILED) {
    const found = route.regex.exec(pathname);
    if (found) {
      const params = {};
      route.names.forEach((name, i) => { params[name] = decodeURIComponent(found[i + 1]); });
      return { pattern: route.pattern, load: route.load, params };
    }
  }
  return { pattern: null, load: () => import('./pages/not_found.js'), params: {} };
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  window.dispatchEvent(new Event('fleet:navigate'));
  if (!replace) window.scrollTo(0, 0);
}

// Links inside the UI change the page without a reload: one listener for every <a>.
export function interceptLinks() {
  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey
        || event.shiftKey || event.altKey) return;
    const link = event.target.closest('a[href]');
    if (!link || link.target || link.hasAttribute('download')) return;
    const url = new URL(link.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith('/ui/')) return;
    // A link within this page (the skip link, #main) is the browser's to follow.
    if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
}

export function useLocation() {
  const [location_, setLocation] = useState(() => ({ path: location.pathname, search: location.search }));
  useEffect(() => {
    const update = () => setLocation({ path: location.pathname, search: location.search });
    window.addEventListener('popstate', update);
    window.addEventListener('fleet:navigate', update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener('fleet:navigate', update);
    };
  }, []);
  return location_;
}

// The query string as an object, and a setter that keeps filters in the URL (shareable).
export function queryParams() {
  return Object.fromEntries(new URLSearchParams(location.search));
}

export function replaceQuery(values) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) if (value) params.set(name, value);
  const text = params.toString();
  history.replaceState(null, '', location.pathname + (text ? `?${text}` : ''));
}

// Path segments from user data (model uids) go into URLs escaped.
export function href(...parts) {
  return `/ui/${parts.map((p) => encodeURIComponent(p)).join('/')}`;
}
