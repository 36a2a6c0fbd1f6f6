/**
 * The program a sandbox thread runs (see sandbox-thread.ts for the host side and the channel). It is
 * plain JavaScript text, evaluated by `new Worker(text, { eval: true })`, so the thread starts the same
 * way from source, from `dist/` and under any test runner or TypeScript loader.
 *
 * What it does:
 * 1. Creates the workflows realm (`node:vm`, `microtaskMode: 'afterEvaluate'`) and evaluates the bundle
 *    in it, which returns the slot of src/workflow/worker-interface.ts.
 * 2. Serves requests from the channel: the request text goes to `slot.input`, the dispatch script is
 *    evaluated (promise jobs of workflow code run at the end of each evaluation) until `slot.next` is
 *    empty, and the answer goes back with the log lines the request produced, separated by '\n' (JSON
 *    text never contains a raw newline).
 * 3. Deadlock detection without a watchdog per call. Requests are served inside one `vm` evaluation
 *    with `timeout: deadlockTimeoutMs + slackMs` (a "session"); the realm calls nested in it carry no
 *    timeout of their own, so the one watchdog covers them all. A session takes a new request only
 *    while at least `deadlockTimeoutMs` of its budget is left; otherwise (and when it has been idle
 *    that long) it ends and the next session arms a new watchdog. So each request gets between
 *    `deadlockTimeoutMs` and `deadlockTimeoutMs + slackMs` before the watchdog stops it. A stopped
 *    request is answered as a deadlock; the realm and every other run in it stay usable (V8 empties the
 *    realm's microtask queue when it terminates execution, so nothing of the stopped run runs later).
 *    Between sessions the thread's event loop turns once, which lets Node process the rejections that
 *    workflow code left unhandled, and the thread publishes its heap usage.
 *
 * Unhandled rejections of realm promises are ignored (workflow code that does not await a failed
 * promise has not observed it); any other one is thrown, ending the thread (the host then restarts it).
 */
export const SANDBOX_THREAD_PROGRAM = String.raw`'use strict';
const vm = require('node:vm');
const { workerData, receiveMessageOnPort } = require('node:worker_threads');
const { code, filename, contextName, sab, port, headerBytes, deadlockTimeoutMs, slackMs, spinMs } =
  workerData;
const REQ = 0, RES = 1, REQ_LEN = 2, RES_LEN = 3, RES_KIND = 4, HEAP_KIB = 5;
const OK = 1, DEADLOCK = 2, FAILED = 3, LOAD_FAILED = 4;
const ctl = new Int32Array(sab, 0, headerBytes / 4);
const data = Buffer.from(sab, headerBytes);

const DISPATCH = new vm.Script('globalThis[Symbol.for("longhaul.sandbox.slot")].dispatch()', {
  filename: 'longhaul-dispatch.js',
});
const SERVE_KEY = Symbol.for('longhaul.sandbox.serve');
const SESSION = new vm.Script('globalThis[Symbol.for("longhaul.sandbox.serve")]()', {
  filename: 'longhaul-serve.js',
});

let context;
let slot;
let realmPromise = null;
let loadError = '';
/** Sequence number of the last request taken, and of the request being handled (0: none). */
let lastSeq = 0;
let busy = 0;
/** When the current session's watchdog was armed, performance.now() ms. */
let armedAt = 0;

process.on('unhandledRejection', (reason, promise) => {
  for (let p = Object.getPrototypeOf(promise); p !== null; p = Object.getPrototypeOf(p)) {
    if (p === realmPromise) return;
  }
  throw reason;
});

function messageOf(err) {
  if (err && typeof err === 'object' && 'message' in err) return String(err.message);
  return String(err);
}

function isTimeout(err) {
  return err !== null && typeof err === 'object' && err.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT';
}

function load() {
  context = vm.createContext(
    {},
    { name: contextName, microtaskMode: 'afterEvaluate', codeGeneration: { strings: true, wasm: false } },
  );
  realmPromise = vm.runInContext('Promise.prototype', context);
  slot = new vm.Script(code, { filename }).runInContext(context, { timeout: deadlockTimeoutMs });
}

function readRequest() {
  const n = ctl[REQ_LEN];
  if (n >= 0) return data.toString('utf8', 0, n);
  const m = receiveMessageOnPort(port);
  if (m === undefined) throw new Error('request missing from the port');
  return m.message;
}

function respond(seq, kind, text) {
  if (text.length * 3 <= data.length || Buffer.byteLength(text) <= data.length) {
    ctl[RES_LEN] = data.write(text, 0);
  } else {
    port.postMessage(text);
    ctl[RES_LEN] = -1;
  }
  ctl[RES_KIND] = kind;
  Atomics.store(ctl, RES, seq);
  Atomics.notify(ctl, RES);
}

function takeLogs() {
  try {
    return slot === undefined ? '' : slot.takeLogs();
  } catch {
    return '';
  }
}

function handle(text) {
  slot.input = text;
  let out = DISPATCH.runInContext(context);
  while (slot.next !== '') {
    slot.input = slot.next;
    out = DISPATCH.runInContext(context);
  }
  slot.input = '';
  return out;
}

/** Serves requests until less than deadlockTimeoutMs of this session's budget would be left. */
function serve() {
  for (;;) {
    let seq = Atomics.load(ctl, REQ);
    const spinEnd = performance.now() + spinMs;
    while (seq === lastSeq && performance.now() < spinEnd) seq = Atomics.load(ctl, REQ);
    while (seq === lastSeq) {
      const left = armedAt + slackMs - performance.now();
      if (left <= 0) return;
      Atomics.wait(ctl, REQ, lastSeq, left);
      seq = Atomics.load(ctl, REQ);
    }
    if (performance.now() - armedAt > slackMs) return;
    lastSeq = seq;
    busy = seq;
    let kind = OK;
    let text;
    try {
      const request = readRequest();
      if (loadError !== '') {
        kind = LOAD_FAILED;
        text = loadError;
      } else {
        text = handle(request) + '\n' + takeLogs();
      }
    } catch (err) {
      kind = FAILED;
      text = 'the sandbox thread failed: ' + messageOf(err);
    }
    respond(seq, kind, text);
    busy = 0;
  }
}
globalThis[SERVE_KEY] = serve;

function session() {
  ctl[HEAP_KIB] = Math.min(0x7fffffff, Math.round(process.memoryUsage().heapUsed / 1024));
  armedAt = performance.now();
  try {
    SESSION.runInThisContext({ timeout: deadlockTimeoutMs + slackMs });
  } catch (err) {
    const seq = busy;
    busy = 0;
    if (seq !== 0 && Atomics.load(ctl, RES) !== seq) {
      if (isTimeout(err)) respond(seq, DEADLOCK, '\n' + takeLogs());
      else respond(seq, FAILED, 'the sandbox thread failed: ' + messageOf(err));
    }
  }
  setImmediate(session);
}

try {
  load();
} catch (err) {
  loadError = messageOf(err);
}
session();
`;
