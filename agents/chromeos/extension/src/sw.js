// The service worker. Everything is in lib/; start() registers every listener synchronously,
// here at the top level, as Manifest V3 requires for events that wake a stopped worker.
import { start } from "./lib/agent.js";

start(chrome, {
  fetch: (...args) => fetch(...args),
  now: () => Date.now(),
  random: Math.random,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  log: console,
});
