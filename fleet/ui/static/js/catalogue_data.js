// The catalogue as the UI reads it: every model type's families (detailed), with the facts the
// filters need worked out once per family.
import { api } from './api.js';

export const MODEL_TYPES = ['LLM', 'embedding', 'rerank', 'image', 'audio'];

function abilities(type, family) {
  if (type === 'embedding') return ['embed'];
  if (type === 'rerank') return ['rerank'];
  return family.model_ability || [];
}

// Sizes come as numbers or in Xinference's spelling ("0_135" for 0.135 billion).
export function billions(size) {
  if (size === null || size === undefined) return null;
  return Number(String(size).replace('_', '.'));
}

function sizes(family) {
  return [...new Set((family.model_specs || []).map((s) => billions(s.model_size_in_billions))
    .filter((s) => s !== null && !Number.isNaN(s)))].sort((a, b) => a - b);
}

export function describeFamily(type, family) {
  const specs = family.model_specs || [];
  return {
    type,
    name: family.model_name,
    builtin: family.is_builtin !== false,
    description: family.model_description || '',
    abilities: abilities(type, family),
    formats: [...new Set(specs.map((s) => s.model_format))],
    sizes: sizes(family),
    quantizations: [...new Set(specs.flatMap((s) => s.quantizations || []))],
    family,
  };
}

// A type the server does not serve yet (audio, before it lands) is an empty list, not an error.
export async function loadCatalogue() {
  const lists = await Promise.all(MODEL_TYPES.map((type) => api(
    `/v1/model_registrations/${type}`, { query: { detailed: true } },
  ).then((families) => families.map((f) => describeFamily(type, f)), (error) => {
    if (error.status === 400 || error.status === 404) return [];
    throw error;
  })));
  return lists.flat();
}

export function sizeLabel(size) {
  const value = billions(size);
  return value === null ? '' : `${value}B`;
}
