// One place that binds htm to Preact, so that every module writes `html\`...\`` templates
// (JSX-like, with no build step) and imports the hooks from here.
import { h, render } from 'preact';
import htm from 'htm';

export const html = htm.bind(h);
export { render };
export { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
