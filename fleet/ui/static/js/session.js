// The API key of this browser tab and what it may do. The key lives in sessionStorage only
// (gone when the tab closes, never written to disk by the UI); rights come from /v1/auth/me.

const KEY_NAME = 'fleet.apiKey';
const listeners = new Set();
let rights = null; // {auth, holder, permissions, models}

export function getKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

export function getRights() {
  return rights;
}

export function setRights(value) {
  rights = value;
  listeners.forEach((listener) => listener(rights));
}

export function onRightsChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// Whether the current key may do `permission` (every permission when the cluster has no keys).
export function can(permission) {
  return Boolean(rights && rights.permissions.includes(permission));
}

export function signOut() {
  setKey(null);
  setRights(null);
}
