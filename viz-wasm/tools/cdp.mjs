// A small headless-Chromium driver over the DevTools protocol, for the
// visualizer's browser tests and measurements (no npm packages: Node's
// built-in WebSocket, behind --experimental-websocket on Node 20).
//
//   node --experimental-websocket viz-wasm/tools/cdp.mjs URL STEP...
//
// CDP_WINDOW=W,H sets the window size (default 1050,820); CDP_WAIT_MS bounds
// each wait (default 30000).
// Steps run in order, each a `kind:argument` word:
//   wait:EXPR    poll until the JavaScript expression is truthy (bounded)
//   print:EXPR   print the expression's value as one JSON line
//   eval:EXPR    evaluate, ignore the value
//   click:SEL    scroll the element matching the CSS selector into view and
//                click its centre
//   key:KEY      press a key in the focused element (e.g. " ", "ArrowRight")
//   sleep:MS     wait in real time
//   shot:FILE    save a PNG screenshot
//   tracestart:  start a Chrome performance trace (devtools timeline, GC)
//   tracestop:FILE  stop it and write the events as JSON (chrome://tracing)
// The page's own errors (uncaught exceptions, console.error) are printed to
// stderr. Exits non-zero on any failed step, and always closes Chromium.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';

const [url, ...steps] = process.argv.slice(2);
if (!url) {
  console.error('usage: cdp.mjs URL STEP...');
  process.exit(2);
}
const WAIT_MS = Number(process.env.CDP_WAIT_MS || 30000);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const port = await freePort();
  const profile = mkdtempSync(join(tmpdir(), 'cdp-'));
  const chrome = spawn('chromium', [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--window-size=${process.env.CDP_WINDOW || '1050,820'}`, `--remote-debugging-port=${port}`, `--user-data-dir=${profile}`,
    'about:blank',
  ], { stdio: 'ignore' });
  const exited = new Promise((r) => chrome.once('exit', r));
  const cleanup = async () => {
    chrome.kill('SIGKILL');
    await exited;
    // Chromium's helpers may still be writing the profile for a moment;
    // a leftover temporary profile is not worth failing a check for.
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (err) {
      console.error(`cdp: could not remove ${profile}: ${err.message}`);
    }
  };
  try {
    // The browser's page target, once the debugging endpoint answers.
    let target = null;
    for (let k = 0; k < 100 && !target; k++) {
      try {
        const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
        target = list.find((t) => t.type === 'page');
      } catch {
        await sleep(100);
      }
    }
    if (!target) throw new Error('chromium did not start its debugging endpoint');
    const ws = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((ok, fail) => {
      ws.onopen = ok;
      ws.onerror = () => fail(new Error('cannot connect to chromium'));
    });
    let next = 1;
    const pending = new Map();
    const traced = [];
    let traceDone = null;
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.method === 'Tracing.dataCollected') {
        traced.push(...msg.params.value);
      } else if (msg.method === 'Tracing.tracingComplete') {
        if (traceDone) traceDone();
      } else if (msg.id && pending.has(msg.id)) {
        const { ok, fail } = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.error) fail(new Error(msg.error.message));
        else ok(msg.result);
      } else if (msg.method === 'Runtime.exceptionThrown') {
        console.error('page exception:', msg.params.exceptionDetails.exception?.description || msg.params.exceptionDetails.text);
      } else if (msg.method === 'Runtime.consoleAPICalled' && msg.params.type === 'error') {
        console.error('page console.error:', msg.params.args.map((a) => a.value ?? a.description).join(' '));
      }
    };
    const send = (method, params = {}) => new Promise((ok, fail) => {
      const id = next++;
      pending.set(id, { ok, fail });
      ws.send(JSON.stringify({ id, method, params }));
    });
    const evaluate = async (expr) => {
      const r = await send('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true });
      if (r.exceptionDetails) throw new Error(`${expr}: ${r.exceptionDetails.exception?.description || r.exceptionDetails.text}`);
      return r.result.value;
    };
    await send('Runtime.enable');
    await send('Page.enable');
    await send('Page.navigate', { url });
    for (const step of steps) {
      const i = step.indexOf(':');
      const kind = step.slice(0, i), arg = step.slice(i + 1);
      if (kind === 'wait') {
        const end = Date.now() + WAIT_MS;
        let v = null;
        while (!(v = await evaluate(arg).catch(() => null))) {
          if (Date.now() > end) throw new Error(`timed out waiting for ${arg}`);
          await sleep(50);
        }
      } else if (kind === 'print') {
        console.log(JSON.stringify(await evaluate(arg)));
      } else if (kind === 'eval') {
        await evaluate(arg);
      } else if (kind === 'click') {
        const box = await evaluate(`(() => { const e = document.querySelector(${JSON.stringify(arg)}); e.scrollIntoView({ block: 'center', inline: 'center' }); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()`);
        for (const type of ['mousePressed', 'mouseReleased']) {
          await send('Input.dispatchMouseEvent', { type, x: box[0], y: box[1], button: 'left', clickCount: 1 });
        }
      } else if (kind === 'key') {
        for (const type of ['keyDown', 'keyUp']) {
          await send('Input.dispatchKeyEvent', { type, key: arg, text: type === 'keyDown' && arg.length === 1 ? arg : undefined });
        }
      } else if (kind === 'tracestart') {
        await send('Tracing.start', {
          categories: process.env.CDP_TRACE_CATEGORIES || 'devtools.timeline,disabled-by-default-devtools.timeline,v8,v8.gc,blink.user_timing,blink_gc',
          transferMode: 'ReportEvents',
        });
      } else if (kind === 'tracestop') {
        const done = new Promise((r) => { traceDone = r; });
        await send('Tracing.end');
        await done;
        writeFileSync(arg, JSON.stringify({ traceEvents: traced }));
      } else if (kind === 'sleep') {
        await sleep(Number(arg));
      } else if (kind === 'shot') {
        const r = await send('Page.captureScreenshot', { format: 'png' });
        writeFileSync(arg, Buffer.from(r.data, 'base64'));
      } else {
        throw new Error(`unknown step ${step}`);
      }
    }
    ws.close();
  } finally {
    await cleanup();
  }
}

main().catch((err) => {
  console.error(`cdp: ${err.message}`);
  process.exit(1);
});
