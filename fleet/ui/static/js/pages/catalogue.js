// The catalogue: every family of every model type, searchable and filtered by type, ability,
// size, format and engine. Filters live in the URL, so a filtered view can be shared.
import { api } from '../api.js';
import { ErrorBox, Loading } from '../components/ui.js';
import { loadCatalogue, MODEL_TYPES, sizeLabel } from '../catalogue_data.js';
import { useLoad } from '../hooks.js';
import { html, useMemo, useState } from '../html.js';
import { href, queryParams, replaceQuery } from '../navigation.js';

const SIZES = [['', 'any size'], ['1', 'up to 1B'], ['8', 'up to 8B'], ['32', 'up to 32B'], ['big', 'over 32B']];

function fitsSize(entry, size) {
  if (!size) return true;
  if (!entry.sizes.length) return false;
  if (size === 'big') return entry.sizes.some((s) => s > 32);
  return entry.sizes.some((s) => s <= Number(size));
}

// An engine runs a family when it serves the family's type and one of its formats.
function runsOn(entry, engine) {
  return engine.model_types.includes(entry.type)
    && entry.formats.some((f) => engine.formats.includes(f));
}

function Select({ id, label, value, options, onChange }) {
  return html`<label class="sr-wrap"><span class="small muted">${label}</span>
    <select id=${id} value=${value} onChange=${(e) => onChange(e.target.value)}>
      ${options.map(([v, text]) => html`<option value=${v}>${text}</option>`)}
    </select></label>`;
}

function Card({ entry }) {
  return html`<article class="card" data-testid="family">
    <h3><a href=${href('catalogue', entry.type, entry.name)}>${entry.name}</a></h3>
    <div class="row small">
      <span class="badge">${entry.type}</span>
      ${entry.builtin ? null : html`<span class="badge state-launching">custom</span>`}
      ${entry.abilities.map((a) => html`<span class="chip">${a}</span>`)}
    </div>
    <p class="small">${entry.description}</p>
    <p class="small muted">${entry.formats.join(', ')}${entry.sizes.length
      ? ` · ${entry.sizes.map(sizeLabel).join(', ')}` : ''}</p>
  </article>`;
}

export default function CataloguePage() {
  const catalogue = useLoad(loadCatalogue);
  const engines = useLoad(() => api('/v1/engines'));
  const [filters, setFilters] = useState(() => ({
    q: '', type: '', ability: '', size: '', format: '', engine: '', ...queryParams(),
  }));
  const update = (name) => (value) => {
    const next = { ...filters, [name]: value };
    setFilters(next);
    replaceQuery(next);
  };
  const entries = catalogue.data || [];
  const engineRows = engines.data || [];
  const choices = useMemo(() => ({
    abilities: [...new Set(entries.flatMap((e) => e.abilities))].sort(),
    formats: [...new Set(entries.flatMap((e) => e.formats))].sort(),
  }), [entries]);
  const shown = useMemo(() => {
    const words = filters.q.toLowerCase().split(/\s+/).filter(Boolean);
    const engine = engineRows.find((e) => e.engine === filters.engine);
    return entries.filter((e) => (!filters.type || e.type === filters.type)
      && (!filters.ability || e.abilities.includes(filters.ability))
      && (!filters.format || e.formats.includes(filters.format))
      && fitsSize(e, filters.size)
      && (!engine || runsOn(e, engine))
      && words.every((w) => `${e.name} ${e.description}`.toLowerCase().includes(w)));
  }, [entries, engineRows, filters]);

  if (catalogue.error) return html`<${ErrorBox} error=${catalogue.error}/>`;
  return html`<div>
    <h1>Catalogue</h1>
    <div class="filters" role="search">
      <label><span class="small muted">Search</span>
        <input type="search" id="catalogue-search" value=${filters.q} placeholder="name or description"
          onInput=${(e) => update('q')(e.target.value)}/></label>
      <${Select} id="filter-type" label="Type" value=${filters.type} onChange=${update('type')}
        options=${[['', 'all types'], ...MODEL_TYPES.map((t) => [t, t])]}/>
      <${Select} id="filter-ability" label="Ability" value=${filters.ability} onChange=${update('ability')}
        options=${[['', 'any ability'], ...choices.abilities.map((a) => [a, a])]}/>
      <${Select} id="filter-size" label="Size" value=${filters.size} onChange=${update('size')} options=${SIZES}/>
      <${Select} id="filter-format" label="Format" value=${filters.format} onChange=${update('format')}
        options=${[['', 'any format'], ...choices.formats.map((f) => [f, f])]}/>
      <${Select} id="filter-engine" label="Engine" value=${filters.engine} onChange=${update('engine')}
        options=${[['', 'any engine'], ...engineRows.map((e) => [e.engine,
          `${e.engine}${e.installed ? '' : ' (not installed)'}`])]}/>
    </div>
    ${catalogue.loading && !catalogue.data ? html`<${Loading} what="the catalogue"/>` : html`
      <p class="muted small" aria-live="polite">${shown.length} of ${entries.length} families</p>
      <div class="grid">${shown.map((e) => html`<${Card} key=${`${e.type}/${e.name}`} entry=${e}/>`)}</div>`}
  </div>`;
}
