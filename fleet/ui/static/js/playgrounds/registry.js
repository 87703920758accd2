// Which playgrounds a model gets: one module per kind, chosen from the model's type and
// abilities. A new kind slots in with one line here and one module.
const PLAYGROUNDS = [
  { kind: 'chat', label: 'Chat', load: () => import('./chat.js'),
    fits: (m) => m.model_type === 'LLM' && m.model_ability.includes('chat') },
  { kind: 'completion', label: 'Completion', load: () => import('./completion.js'),
    fits: (m) => m.model_type === 'LLM' && (m.model_ability.includes('generate') || m.model_ability.includes('chat')) },
  { kind: 'embeddings', label: 'Embeddings', load: () => import('./embeddings.js'),
    fits: (m) => m.model_type === 'embedding' },
  { kind: 'rerank', label: 'Rerank', load: () => import('./rerank.js'),
    fits: (m) => m.model_type === 'rerank' },
  { kind: 'image', label: 'Text to image', load: () => import('./image.js'),
    fits: (m) => m.model_type === 'image' && m.model_ability.includes('text2image') },
  { kind: 'ocr', label: 'OCR', load: () => import('./ocr.js'),
    fits: (m) => m.model_type === 'image' && m.model_ability.includes('ocr') },
  { kind: 'speech', label: 'Text to speech', load: () => import('./speech.js'),
    fits: (m) => m.model_type === 'audio' && m.model_ability.includes('text2audio') },
  { kind: 'transcription', label: 'Speech to text', load: () => import('./transcription.js'),
    fits: (m) => m.model_type === 'audio' && m.model_ability.includes('audio2text') },
];

export function playgroundsFor(model) {
  const described = { ...model, model_ability: model.model_ability || [] };
  return PLAYGROUNDS.filter((p) => p.fits(described));
}
