// The page: loads a trace into the Rust replay model (viz_wasm.js, built
// by wasm-bindgen) and draws the state after the current event. All Raft
// knowledge lives in Rust; this file only draws, plays and handles input.
import init, { Viewer } from './pkg/viz_wasm.js';

const $ = (id) => document.getElementById(id);
const root = $('viz');
const canvas = $('cluster');
const logsCanvas = $('logs');
const ctx = canvas.getContext('2d');
const lctx = logsCanvas.getContext('2d');

// ----- state ---------------------------------------------------------------

let viewer = null;      // the Rust Viewer, once a trace is loaded
let header = null;      // the trace header (object)
let total = 0;          // events in the trace
let at = 0;             // events applied (0..=total)
let state = null;       // ClusterState after `at` events (object)
let playing = false;
let playT = 0;          // trace time the playback clock stands at
let selected = null;    // {kind: 'node', id} or {kind: 'msg', id}
let lastFrame = 0;
let wallClock = false;  // trace t in wall-clock µs (real nodes) or sim ms

// ----- helpers -------------------------------------------------------------

// A colour per term: neighbouring terms get clearly different hues.
function termColour(term, light) {
  if (!term) return light ? '#eeeeee' : '#9a9aa0';
  const hue = (term * 137.508) % 360;
  return `hsl(${hue}, ${light ? 70 : 60}%, ${light ? 82 : 45}%)`;
}
const ROLE_COLOUR = {
  leader: '#1f7a3a', candidate: '#b8860b', precandidate: '#c9a227',
  follower: '#2463c7', down: '#9a9aa0', none: '#9a9aa0',
};

function fmtTime(t) {
  if (t == null) return '–';
  if (wallClock) {
    const d = new Date(t / 1000);
    return d.toISOString().slice(11, 23);
  }
  return `${t} ms`;
}

function showError(msg) {
  const e = $('error');
  e.textContent = msg;
  e.hidden = !msg;
}

// ----- loading -------------------------------------------------------------

async function loadText(text, name, startAt) {
  showError('');
  let v;
  try {
    v = new Viewer(text);
  } catch (err) {
    // The model names the first bad line and why; keep what was shown.
    showError(`Cannot load ${name}: ${err.message || err}`);
    $('status').textContent = viewer ? $('status').textContent : `no trace loaded (${name} refused)`;
    return false;
  }
  if (viewer) viewer.free();
  viewer = v;
  header = JSON.parse(viewer.header_json());
  total = viewer.len();
  wallClock = (header.meta && header.meta.clock === 'wall_us') || header.source === 'node' || header.source === 'merge';
  $('timeline').max = String(total);
  playing = false;
  selected = null;
  seek(Math.max(0, Math.min(total, startAt || 0)));
  playT = state ? state.t : 0;
  root.focus();
  return true;
}

async function loadUrl(url, startAt) {
  let text;
  try {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`HTTP ${r.status} ${r.statusText}`);
    text = await r.text();
  } catch (err) {
    showError(`Cannot fetch ${url}: ${err.message || err}`);
    return false;
  }
  return loadText(text, url, startAt);
}

// ----- seeking and playing -------------------------------------------------

function seek(n) {
  if (!viewer) return;
  at = Math.max(0, Math.min(total, n));
  state = JSON.parse(viewer.state_json(at));
  $('timeline').value = String(at);
  draw();
}

function step(delta) {
  playing = false;
  seek(at + delta);
  if (state) playT = state.t;
}

function jump(what, back) {
  if (!viewer) return;
  const i = back ? viewer.find_prev(at - 1, what) : viewer.find_next(at, what);
  if (i >= 0) {
    playing = false;
    seek(i + 1);
    playT = state.t;
  }
}

// Playback maps trace time to wall time at `speed`: a second of a sim trace
// (1000 ms) takes one second at 1×; a real cluster's µs clock likewise.
function frame(now) {
  const dt = lastFrame ? Math.min(now - lastFrame, 100) : 0;
  lastFrame = now;
  if (playing && viewer) {
    const speed = Number($('speed').value);
    playT += dt * speed * (wallClock ? 1000 : 1);
    const next = viewer.index_after_time(at, playT);
    if (next !== at) seek(next);
    if (at >= total) playing = false;
    updatePlayButton();
  }
  requestAnimationFrame(frame);
}

function updatePlayButton() {
  $('play').textContent = playing ? '❚❚' : '▶';
}

function togglePlay() {
  if (!viewer) return;
  if (at >= total) seek(0);
  playing = !playing;
  if (playing && state) playT = state.t;
  updatePlayButton();
}

// ----- drawing -------------------------------------------------------------

function nodeIds() {
  return state ? Object.keys(state.nodes).map(Number).sort((a, b) => a - b) : [];
}

// Node positions on a circle (stable: by sorted id).
function layout() {
  const ids = nodeIds();
  const w = canvas.width, h = canvas.height;
  const cx = w / 2, cy = h / 2 + 6, r = Math.min(w, h) * 0.36;
  const pos = {};
  ids.forEach((id, k) => {
    const a = -Math.PI / 2 + (2 * Math.PI * k) / ids.length;
    pos[id] = { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) };
  });
  return pos;
}

const NODE_R = 34;

function draw() {
  drawCluster();
  drawLogs();
  drawConfig();
  drawNodeTable();
  drawDetails();
  drawStatus();
}

function drawCluster() {
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (!state) {
    ctx.fillStyle = '#6b6b70';
    ctx.font = '16px system-ui';
    ctx.textAlign = 'center';
    ctx.fillText('Open a trace, drop one here, or add ?trace=URL', w / 2, h / 2);
    return;
  }
  const pos = layout();
  // Partitions: a red dashed line between the two sides of each cut link.
  ctx.save();
  ctx.setLineDash([6, 5]);
  ctx.strokeStyle = 'rgba(200,40,40,0.55)';
  for (const [a, b] of state.blocked || []) {
    if (!pos[a] || !pos[b]) continue;
    ctx.beginPath();
    ctx.moveTo(pos[a].x, pos[a].y);
    ctx.lineTo(pos[b].x, pos[b].y);
    ctx.stroke();
  }
  ctx.restore();
  // Messages in flight, placed along their link by age.
  msgHits = [];
  for (const m of state.msgs || []) {
    const a = pos[m.from], b = pos[m.to];
    if (!a || !b) continue;
    const age = Math.max(0, state.t - m.t);
    const typical = wallClock ? 2000 : 20;
    const f = Math.min(0.85, 0.15 + (0.7 * age) / typical);
    const x = a.x + (b.x - a.x) * f, y = a.y + (b.y - a.y) * f;
    const sel = selected && selected.kind === 'msg' && selected.id === m.id;
    ctx.beginPath();
    ctx.fillStyle = termColour(m.m.term, false);
    ctx.arc(x, y, sel ? 8 : 6, 0, 2 * Math.PI);
    ctx.fill();
    // Responses are drawn hollow, requests solid.
    if (m.m.type.endsWith('_resp')) {
      ctx.beginPath();
      ctx.fillStyle = '#fff';
      ctx.arc(x, y, sel ? 4 : 3, 0, 2 * Math.PI);
      ctx.fill();
    }
    // Labels only when they can be read: few messages, or the selected one.
    if (sel || (state.msgs || []).length <= 6) {
      ctx.fillStyle = '#1d1d1f';
      ctx.font = '10px system-ui';
      ctx.textAlign = 'center';
      ctx.fillText(m.m.type, x, y - 9);
    }
    msgHits.push({ x, y, id: m.id });
  }
  // Nodes.
  for (const id of nodeIds()) {
    const n = state.nodes[id];
    const p = pos[id];
    const role = n.role;
    const sel = selected && selected.kind === 'node' && selected.id === id;
    // Election timer: an arc that empties as the timeout approaches.
    const timer = timerFraction(n);
    if (timer != null && !n.down && role !== 'leader') {
      ctx.beginPath();
      ctx.strokeStyle = 'rgba(36,99,199,0.35)';
      ctx.lineWidth = 5;
      ctx.arc(p.x, p.y, NODE_R + 6, -Math.PI / 2, -Math.PI / 2 + 2 * Math.PI * (1 - timer));
      ctx.stroke();
    }
    ctx.beginPath();
    ctx.arc(p.x, p.y, NODE_R, 0, 2 * Math.PI);
    ctx.fillStyle = n.down ? '#e6e6e8' : termColour(n.term, true);
    ctx.fill();
    ctx.lineWidth = sel ? 4 : 2.5;
    ctx.strokeStyle = ROLE_COLOUR[role] || '#444';
    if (n.paused) ctx.setLineDash([4, 4]);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = '#1d1d1f';
    ctx.textAlign = 'center';
    ctx.font = 'bold 15px system-ui';
    ctx.fillText(`n${id}`, p.x, p.y - 4);
    ctx.font = '12px system-ui';
    ctx.fillText(`term ${n.term}`, p.x, p.y + 12);
    ctx.font = '11px system-ui';
    ctx.fillStyle = ROLE_COLOUR[role] || '#444';
    const label = n.paused ? `${role} (paused)` : role;
    ctx.fillText(label, p.x, p.y + NODE_R + 20);
    // Votes received while campaigning.
    if (n.campaign) {
      const c = n.campaign;
      ctx.fillStyle = '#6b4e00';
      const denied = c.denied.length ? `, refused ${c.denied.join(', ')}` : '';
      ctx.fillText(`${c.pre ? 'pre-votes' : 'votes'} ${c.granted.join(', ')}${denied}`, p.x, p.y + NODE_R + 33);
    }
  }
}

let msgHits = [];

// How much of the election timeout has run since the timer's last reset
// (0..1), or null when the trace does not say.
function timerFraction(n) {
  const range = n.timeout_range;
  if (!range || n.reset == null) return null;
  // The node's actual timeout is drawn from [lo, hi); the arc runs against
  // the upper bound, so an arc that has not emptied may still fire.
  return Math.max(0, Math.min(1, (state.t - n.reset) / range[1]));
}

function drawLogs() {
  const w = logsCanvas.width, h = logsCanvas.height;
  lctx.clearRect(0, 0, w, h);
  if (!state) return;
  const ids = nodeIds();
  const rowH = Math.min(26, Math.floor((h - 14) / Math.max(1, ids.length)));
  let maxIndex = 1;
  for (const id of ids) maxIndex = Math.max(maxIndex, state.nodes[id].log.last || 0);
  // Show the last entries that fit, at least 8 px per entry.
  const left = 48, width = w - left - 8;
  const cells = Math.max(10, Math.min(maxIndex, Math.floor(width / 8)));
  const first = Math.max(1, maxIndex - cells + 1);
  const cw = width / cells;
  lctx.font = '11px system-ui';
  ids.forEach((id, k) => {
    const n = state.nodes[id];
    const y = 4 + k * rowH;
    lctx.fillStyle = '#1d1d1f';
    lctx.textAlign = 'right';
    lctx.fillText(`n${id}`, left - 8, y + rowH * 0.65);
    // Compacted prefix: hatched grey.
    const fi = n.log.first || 1;
    if (fi > first) {
      const x1 = left + Math.min(cells, fi - first) * cw;
      lctx.fillStyle = '#e4e4e7';
      lctx.fillRect(left, y, x1 - left, rowH - 4);
      lctx.fillStyle = '#6b6b70';
      lctx.textAlign = 'left';
      if (x1 - left > 70) lctx.fillText(`compacted ≤ ${fi - 1}`, left + 4, y + rowH * 0.62);
    }
    for (const [a, b, term] of n.log.terms || []) {
      const lo = Math.max(a, first), hi = Math.min(b, first + cells - 1);
      if (lo > hi) continue;
      const x = left + (lo - first) * cw;
      lctx.fillStyle = termColour(term, false);
      lctx.fillRect(x, y, (hi - lo + 1) * cw - (cw > 4 ? 1 : 0), rowH - 4);
    }
    // Commit and applied markers.
    const mark = (idx, colour, dy) => {
      if (idx == null || idx < first) return;
      const x = left + (Math.min(idx, first + cells - 1) - first + 1) * cw;
      lctx.fillStyle = colour;
      lctx.fillRect(x - 2, y - 2 + dy, 3, rowH);
    };
    mark(n.applied, '#1f7a3a', 1);
    mark(n.commit, '#111', 0);
    if (n.log.snap && n.log.snap >= first) {
      lctx.fillStyle = '#7a3ea1';
      lctx.textAlign = 'left';
      lctx.fillText('◆', left + (n.log.snap - first) * cw, y + rowH * 0.62);
    }
  });
  lctx.fillStyle = '#6b6b70';
  lctx.textAlign = 'left';
  lctx.fillText(`entries ${first}…${first + cells - 1}; black bar commit, green applied, ◆ snapshot`, left, h - 3);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function drawConfig() {
  const el = $('config');
  if (!state || !state.config) {
    setText(el, '');
    return;
  }
  const c = state.config;
  const fmt = (xs) => (xs && xs.length ? `{${xs.join(', ')}}` : '{}');
  let text = `voters ${fmt(c.voters)}`;
  if (c.outgoing && c.outgoing.length) text = `joint: new ${fmt(c.voters)} + old ${fmt(c.outgoing)}`;
  if (c.learners && c.learners.length) text += `\nlearners ${fmt(c.learners)}`;
  if (c.index) text += `\n(${c.change} at index ${c.index})`;
  const pending = state.pending || [];
  if (pending.length) {
    text += `\nclients waiting: ` + pending.map((r) => `c${r.client} ${r.op} k${r.key}${r.value != null ? '=' + r.value : ''} → n${r.node}`).join('; ');
  }
  const last = (state.replies || []).slice(-3);
  if (last.length) {
    text += `\nlast replies: ` + last.map((r) => `c${r.client} ${r.op} ${r.outcome}${r.value != null ? ' ' + r.value : ''} from n${r.node}`).join('; ');
  }
  setText(el, text);
}

// The nodes as text too: readable without the canvas (screen readers,
// copying, tests).
function drawNodeTable() {
  const el = $('nodetable');
  if (!state) {
    el.innerHTML = '';
    return;
  }
  const rows = nodeIds().map((id) => {
    const n = state.nodes[id];
    const role = n.paused ? `${n.role} (paused)` : n.role;
    const sel = selected && selected.kind === 'node' && selected.id === id ? ' class="sel"' : '';
    return `<tr${sel} data-node="${id}"><td>n${id}</td><td class="role">${role}</td><td class="term">${n.term}</td>` +
      `<td class="commit">${n.commit}</td><td class="applied">${n.applied}</td><td>${n.log.first}..${n.log.last}</td></tr>`;
  });
  const html = '<tr><th>node</th><th>role</th><th>term</th><th>commit</th><th>applied</th><th>log</th></tr>' + rows.join('');
  if (el.innerHTML !== html) el.innerHTML = html;
}

function drawDetails() {
  const el = $('details');
  if (!state || !selected) return;
  let obj = null;
  if (selected.kind === 'node') obj = state.nodes[selected.id];
  if (selected.kind === 'msg') obj = (state.msgs || []).find((m) => m.id === selected.id);
  if (!obj) {
    el.innerHTML = '<p class="hint">Click a node or a message for all its fields.</p>';
    return;
  }
  const title = selected.kind === 'node' ? `node ${selected.id}` : `message ${selected.id}`;
  setText(el, `${title}\n${JSON.stringify(obj, null, 1)}`);
}

function drawStatus() {
  if (!state) return;
  const leader = state.leader != null ? `leader n${state.leader}` : 'no leader';
  const term = state.leader != null ? state.leader_term : state.max_term;
  setText($('status'), `event ${at} / ${total} · t=${fmtTime(state.t)} · ${leader} · term ${term}`);
}

// ----- input ---------------------------------------------------------------

const KEYS = [
  ['space', 'play / pause', () => togglePlay()],
  ['→ / ←', 'one event forward / back', null],
  ['PgDn / PgUp', '100 events forward / back', null],
  ['Home / End', 'first / last event', null],
  ['e / E', 'next / previous election', () => jump('election', false)],
  ['c / C', 'next / previous configuration change', () => jump('config', false)],
  ['s / S', 'next / previous snapshot', () => jump('snapshot', false)],
  ['f / F', 'next / previous fault', () => jump('fault', false)],
  ['+ / -', 'faster / slower', null],
  ['?', 'this help', null],
  ['Esc', 'close help, clear selection', null],
];

function fillKeyTable() {
  $('keys').innerHTML = KEYS.map(([k, what]) => `<tr><td>${k}</td><td>${what}</td></tr>`).join('');
}

function showHelp(show) {
  $('helpbox').hidden = !show;
}

root.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
  const jumps = { e: 'election', c: 'config', s: 'snapshot', f: 'fault' };
  const k = e.key;
  let handled = true;
  if (k === ' ') togglePlay();
  else if (k === 'ArrowRight') step(1);
  else if (k === 'ArrowLeft') step(-1);
  else if (k === 'PageDown') step(100);
  else if (k === 'PageUp') step(-100);
  else if (k === 'Home') step(-total);
  else if (k === 'End') step(total);
  else if (jumps[k.toLowerCase()] && !e.ctrlKey && !e.metaKey) jump(jumps[k.toLowerCase()], k !== k.toLowerCase());
  else if (k === '+' || k === '=') bumpSpeed(1);
  else if (k === '-') bumpSpeed(-1);
  else if (k === '?') showHelp($('helpbox').hidden);
  else if (k === 'Escape') { showHelp(false); selected = null; draw(); }
  else handled = false;
  if (handled) {
    e.preventDefault();
    e.stopPropagation();
  }
});

function bumpSpeed(d) {
  const s = $('speed');
  s.selectedIndex = Math.max(0, Math.min(s.options.length - 1, s.selectedIndex + d));
}

canvas.addEventListener('click', (e) => {
  if (!state) return;
  const r = canvas.getBoundingClientRect();
  const x = ((e.clientX - r.left) * canvas.width) / r.width;
  const y = ((e.clientY - r.top) * canvas.height) / r.height;
  const m = msgHits.find((h) => Math.hypot(h.x - x, h.y - y) < 9);
  if (m) selected = { kind: 'msg', id: m.id };
  else {
    const pos = layout();
    const id = nodeIds().find((i) => Math.hypot(pos[i].x - x, pos[i].y - y) < NODE_R);
    selected = id != null ? { kind: 'node', id } : null;
  }
  draw();
});

$('play').onclick = togglePlay;
$('back').onclick = () => step(-1);
$('fwd').onclick = () => step(1);
$('timeline').oninput = (e) => {
  playing = false;
  updatePlayButton();
  seek(Number(e.target.value));
  if (state) playT = state.t;
};
for (const b of document.querySelectorAll('[data-jump]')) {
  b.onclick = (e) => jump(b.dataset.jump, e.shiftKey);
}
$('help').onclick = () => showHelp($('helpbox').hidden);
$('helpclose').onclick = () => showHelp(false);
$('file').onchange = async (e) => {
  const f = e.target.files[0];
  if (f) await loadText(await f.text(), f.name, 0);
};
$('urlform').onsubmit = async (e) => {
  e.preventDefault();
  const u = $('url').value.trim();
  if (u) await loadUrl(u, 0);
};
root.addEventListener('dragover', (e) => {
  e.preventDefault();
  $('drop').hidden = false;
});
root.addEventListener('dragleave', (e) => {
  if (e.target === $('drop')) $('drop').hidden = true;
});
root.addEventListener('drop', async (e) => {
  e.preventDefault();
  $('drop').hidden = true;
  const f = e.dataTransfer.files[0];
  if (f) await loadText(await f.text(), f.name, 0);
});

// ----- start ---------------------------------------------------------------

async function main() {
  fillKeyTable();
  await init();
  const q = new URLSearchParams(location.search);
  const trace = q.get('trace');
  draw();
  if (trace) {
    $('url').value = trace;
    const t0 = performance.now();
    const ok = await loadUrl(trace, Number(q.get('at') || 0));
    loadMs = performance.now() - t0;
    if (ok && q.get('perf') === '1') {
      requestAnimationFrame(frame);
      await measure();
      return;
    }
  }
  root.dataset.ready = '1';
  requestAnimationFrame(frame);
}

let loadMs = 0;

// `?perf=1`: measures what the issue asks for, in this browser, and writes
// the figures as JSON into a <pre id="perf"> (viz-wasm/perf.sh reads it):
// load (fetch, parse, first draw), seeks to random events (state, parse,
// draw), and frames while playing.
async function measure() {
  const seeks = [];
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let k = 0; k < 200; k++) {
    const n = Math.floor(rand() * (total + 1));
    const t0 = performance.now();
    seek(n);
    seeks.push(performance.now() - t0);
  }
  seeks.sort((a, b) => a - b);
  // Play for three seconds at a speed that crosses the whole trace in ten.
  seek(0);
  playT = state.t;
  const span = Math.max(1, JSON.parse(viewer.state_json(total)).t - state.t);
  const frames = [];
  let last = performance.now();
  playing = true;
  $('speed').innerHTML = `<option value="${span / 10000 / (wallClock ? 1000 : 1)}" selected>perf</option>`;
  await new Promise((done) => {
    const end = last + 3000;
    const tick = (now) => {
      frames.push(now - last);
      last = now;
      if (now < end) requestAnimationFrame(tick);
      else done();
    };
    requestAnimationFrame(tick);
  });
  playing = false;
  frames.shift();
  frames.sort((a, b) => a - b);
  const q = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))];
  const out = {
    events: total,
    load_ms: Math.round(loadMs),
    seek_ms_p50: +q(seeks, 0.5).toFixed(2),
    seek_ms_max: +seeks[seeks.length - 1].toFixed(2),
    frames: frames.length,
    fps: +(frames.length / 3).toFixed(1),
    frame_ms_p50: +q(frames, 0.5).toFixed(2),
    frame_ms_p99: +q(frames, 0.99).toFixed(2),
    events_played: at,
  };
  const pre = document.createElement('pre');
  pre.id = 'perf';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
  root.dataset.ready = '1';
}

main().catch((err) => showError(`The visualizer failed to start: ${err.message || err}`));
