// The UI's entry: find out whether the cluster wants a key, then route by URL.
import { api } from './api.js';
import { KeyPrompt } from './components/key_prompt.js';
import { Layout } from './components/layout.js';
import { ErrorBox, Loading } from './components/ui.js';
import { html, render, useEffect, useState } from './html.js';
import { interceptLinks, useLocation } from './navigation.js';
import { getKey, getRights, onRightsChange, setKey, setRights } from './session.js';

// Pages by URL: each page has its own address under /ui/ (the server answers index.html for
// every one of them), loaded on first visit so that the first page costs only its own code.
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
  ['/ui/keys', () => import('./pages/keys.js')],
  ['/ui/usage', () => import('./pages/usage.js')],
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

function match(pathname) {
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

// Loads the page's module the first time its URL is opened.
function Page({ path }) {
  const route = match(path);
  const [loaded, setLoaded] = useState({ load: null, Component: null, error: null });
  useEffect(() => {
    let cancelled = false;
    route.load().then(
      (module) => { if (!cancelled) setLoaded({ load: route.load, Component: module.default, error: null }); },
      (error) => { if (!cancelled) setLoaded({ load: route.load, Component: null, error }); },
    );
    return () => { cancelled = true; };
  }, [route.load]);
  if (loaded.error) return html`<${ErrorBox} error=${loaded.error} title="This page failed to load."/>`;
  if (loaded.load !== route.load || !loaded.Component) return html`<${Loading}/>`;
  const { Component } = loaded;
  return html`<${Component} ...${route.params} path=${path}/>`;
}

function App() {
  const { path } = useLocation();
  const [rights, setRightsState] = useState(getRights());
  const [problem, setProblem] = useState(null);
  const [expired, setExpired] = useState(false);

  useEffect(() => onRightsChange((value) => {
    if (!value && getKey()) { setKey(null); setExpired(true); } // refused mid-session
    setRightsState(value);
  }), []);

  useEffect(() => {
    if (rights) return;
    // Whether keys are on is public (Xinference's client asks it too); rights need the key.
    api('/v1/cluster/auth').then(async ({ auth }) => {
      if (!auth) setRights(await api('/v1/auth/me'));
      else if (getKey()) setRights(await api('/v1/auth/me'));
      else setProblem('key');
    }).catch((error) => {
      if (error.status !== 401) return setProblem(error);
      if (getKey()) { setKey(null); setExpired(true); } // a key kept from before, now refused
      return setProblem('key');
    });
  }, [rights]);

  if (!rights) {
    if (problem === 'key') return html`<${KeyPrompt} expired=${expired}/>`;
    if (problem) return html`<main id="main"><${ErrorBox} error=${problem} title="Fleet's API cannot be reached."/></main>`;
    return html`<main id="main"><${Loading}/></main>`;
  }
  return html`<${Layout} path=${path}><${Page} path=${path}/></${Layout}>`;
}

interceptLinks();
const root = document.getElementById('app');
root.textContent = ''; // the "Loading" placeholder of index.html
render(html`<${App}/>`, root);
