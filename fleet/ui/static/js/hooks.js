// Data hooks shared by the pages.
import { useCallback, useEffect, useRef, useState } from './html.js';

// Calls `load` now and then every `intervalMs` after each answer (never two at once), paused
// while the tab is hidden: a page left open in the background costs the API nothing.
export function usePoll(load, intervalMs, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const loadRef = useRef(load);
  loadRef.current = load;
  const tick = useRef(null);

  useEffect(() => {
    let stopped = false;
    let timer = null;
    const run = async () => {
      clearTimeout(timer);
      if (stopped) return;
      try {
        const data = await loadRef.current();
        if (!stopped) setState({ data, error: null, loading: false });
      } catch (error) {
        if (!stopped) setState((old) => ({ data: old.data, error, loading: false }));
      }
      if (!stopped && intervalMs && !document.hidden) timer = setTimeout(run, intervalMs);
    };
    const onVisibility = () => { if (!document.hidden) run(); else clearTimeout(timer); };
    tick.current = run;
    setState((old) => ({ ...old, loading: true }));
    run();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, deps);

  const refresh = useCallback(() => tick.current && tick.current(), []);
  return { ...state, refresh };
}

// One load (no polling).
export function useLoad(load, deps = []) {
  return usePoll(load, 0, deps);
}
