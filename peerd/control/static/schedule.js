// Redraws at a bounded rate: events only mark panels dirty; dirty panels are
// drawn together at most every REDRAW_MS, in an animation frame. A burst of
// a thousand events costs one redraw, not a thousand.

export const REDRAW_MS = 250;

const renderers = new Map();
const dirty = new Set();
let timer = null;
export const counters = { redraws: 0 };

export function register(name, render) {
  renderers.set(name, render);
}

export function mark(...names) {
  for (const name of names) dirty.add(name);
  if (timer === null) timer = setTimeout(flush, REDRAW_MS);
}

function flush() {
  requestAnimationFrame(() => {
    timer = null;
    const names = [...dirty];
    dirty.clear();
    for (const name of names) {
      const render = renderers.get(name);
      if (!render) continue;
      try {
        render();
        counters.redraws += 1;
      } catch (e) {
        console.error(`drawing ${name} failed`, e);
      }
    }
  });
}

/**
 * fn() at most once per interval ms, the last call never lost: for
 * refetching a list when events say it changed.
 */
export function throttled(fn, interval) {
  let last = 0;
  let pending = null;
  return function call() {
    const wait = last + interval - Date.now();
    if (wait <= 0 && pending === null) {
      last = Date.now();
      fn();
    } else if (pending === null) {
      pending = setTimeout(() => {
        pending = null;
        last = Date.now();
        fn();
      }, Math.max(0, wait));
    }
  };
}
