// Data hooks shared by the pages.
import { useCallback, useEffect, useRef, useState } from './html.js';

// Calls `load` now and then every `intervalMs` after each answer (never two at once), paused
// while the tab is hidden: a page left open in the background costs the API nothing. Stops
// when `until(data)` says the answer is final, or on a 404 (the thing is gone); an interval of
// null asks nothing at all (a page that knows its subject is going away).
export function usePoll(load, intervalMs, deps = [], until = null) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const loadRef = useRef(load);
  loadRef.current = load;
  const tick = useRef(null);

  useEffect(() => {
    if (intervalMs === null) return undefined;
    let stopped = false;
    let finished = false;
    let timer = null;
    const run = async () => {
      clearTimeout(timer);
      if (stopped) return;
      let final = false;
      try {
        const data = await loadRef.current();
        final = Boolean(until && until(data));
        if (!stopped) setState({ data, error: null, loading: false });
      } catch (error) {
        final = error.status === 404;
        if (!stopped) setState((old) => ({ data: old.data, error, loading: false }));
      }
      finished = final;
      if (!stopped && !final && intervalMs && !document.hidden) timer = setTimeout(run, intervalMs);
    };
    const onVisibility = () => {
      if (document.hidden) clearTimeout(timer);
      else if (!finished && intervalMs) run();
    };
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

// A form's action: `busy` while it runs, `error` when it failed (an ApiError carries the API's
// own message). `submit(work)` is the form's onSubmit: it runs `work()` once per submission.
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const submit = (work) => async (event) => {
    event?.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await work();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, submit };
}
