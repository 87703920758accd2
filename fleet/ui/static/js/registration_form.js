// What the registration form's fields become: Xinference's custom-model JSON, per model type
// (the same JSON `fleet register --file` and the API take).

export const FORM_TYPES = ['LLM', 'embedding', 'rerank'];

export const EMPTY_FORM = { model_name: '', model_description: '', model_uri: '', context_length: '4096',
  abilities: ['chat'], model_family: '', model_format: 'pytorch', quantization: 'none', size: '',
  dimensions: '', max_tokens: '512', language: 'en' };

function optional(value) {
  return value === '' ? undefined : value;
}

export function familyFromForm(type, form) {
  const base = { model_name: form.model_name.trim(), model_description: optional(form.model_description) };
  const uri = optional(form.model_uri.trim());
  const languages = form.language.split(',').map((l) => l.trim()).filter(Boolean);
  if (type === 'LLM') {
    return {
      version: 2, ...base, model_ability: form.abilities, context_length: Number(form.context_length),
      model_lang: languages, model_family: optional(form.model_family.trim()),
      model_specs: [{ model_format: form.model_format,
        model_size_in_billions: form.size === '' ? 0 : Number(form.size),
        quantizations: [form.quantization || 'none'], model_uri: uri }],
    };
  }
  if (type === 'embedding') {
    return { ...base, dimensions: Number(form.dimensions), max_tokens: Number(form.max_tokens),
      language: languages, model_uri: uri };
  }
  return { ...base, language: languages, model_uri: uri };
}

// JSON without the keys left undefined, indented for reading.
export function pretty(value) {
  return JSON.stringify(value, (key, v) => (v === undefined ? undefined : v), 2);
}
