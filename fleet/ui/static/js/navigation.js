// Moving between the UI's pages without a reload, and what pages read of their address: the
// pages import this module only; the table of pages by URL is main.js's, so that no page
// imports the module that loads it.
import { useEffect, useState } from './html.js';

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
