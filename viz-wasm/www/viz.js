// The page: loads a trace into the Rust replay model (viz_wasm.js, built
// by wasm-bindgen) and draws the state after the current event. All Raft
// knowledge lives in Rust; this file only draws, plays and handles input.
import init, { Viewer, Live } from './pkg/viz_wasm.js';

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
let live = null;        // the Rust Live session, in live mode (then viewer is null)
let liveAcc = 0;        // simulated ms owed to the session (fractions)
let liveDue = {};       // in-flight message id -> delivery time (live mode)
let downloadUrl = null; // the last trace download's blob URL

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
  stopLive();
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
  if (live) return liveRefresh(true);
  if (!viewer) return;
  at = Math.max(0, Math.min(total, n));
  state = JSON.parse(viewer.state_json(at));
  $('timeline').value = String(at);
  draw();
}

function step(delta) {
  if (live) {
    // Live: forward only, one tick (10 ms) per event step.
    playing = false;
    updatePlayButton();
    if (delta > 0) liveAdvance(Math.min(delta, 1000) * 10);
    return;
  }
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
  if (live) {
    if (playing) {
      liveAcc += dt * Number($('speed').value);
      const ms = Math.floor(liveAcc);
      if (ms > 0) {
        liveAcc -= ms;
        liveAdvance(ms);
      }
    }
  } else if (playing && viewer) {
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
  if (live) {
    playing = !playing;
    liveAcc = 0;
    updatePlayButton();
    return;
  }
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
    ctx.fillText('Open a trace, drop one here, add ?trace=URL, or press L for a live cluster', w / 2, h / 2);
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
    let f = Math.min(0.85, 0.15 + (0.7 * age) / typical);
    // Live: the simulator knows when it arrives.
    const due = live ? liveDue[m.id] : undefined;
    if (due != null) f = 0.1 + 0.8 * Math.max(0, Math.min(1, (state.t - m.t) / Math.max(1, due - m.t)));
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
    const spare = live && !isMember(id);
    if (n.paused || spare) ctx.setLineDash([4, 4]);
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
    let label = n.paused ? `${role} (paused)` : role;
    if (spare) label += ' · not a member';
    if (live && isCutOff(id)) label += ' · cut off';
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

// Whether node `id` is in the cluster's configuration (voter, outgoing
// voter or learner); true when the trace says nothing.
function isMember(id) {
  const c = state && state.config;
  if (!c) return true;
  return [c.voters, c.outgoing, c.learners].some((xs) => (xs || []).includes(id));
}

// Whether every link of node `id` is cut.
function isCutOff(id) {
  const others = nodeIds().filter((x) => x !== id);
  const cut = new Set((state.blocked || []).filter(([a]) => a === id).map(([, b]) => b));
  return others.length > 0 && others.every((x) => cut.has(x));
}

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

// ----- live mode -----------------------------------------------------------
//
// The real Raft core runs in the page (Rust `Live`: the simulator with no
// random faults or clients); simulated time follows the wall clock at the
// chosen speed and the user acts on nodes, messages and the cluster. The
// state comes from the same replay model as a loaded trace.

function startLive(nodes, seed) {
  showError('');
  let l;
  try {
    l = new Live(nodes, seed);
  } catch (err) {
    showError(`Cannot start a live session: ${err.message || err}`);
    return false;
  }
  stopLive();
  if (viewer) viewer.free();
  viewer = null;
  live = l;
  header = JSON.parse(live.header_json());
  wallClock = false;
  selected = null;
  liveAcc = 0;
  total = at = 0;
  $('timeline').disabled = true;
  for (const b of document.querySelectorAll('[data-jump]')) b.disabled = true;
  $('liveform').hidden = true;
  $('livebar').hidden = false;
  setText($('liveinfo'), `live · seed ${live.seed()} · ${nodes} nodes`);
  setText($('livemsg'), 'click a node (or press 1…9) to act on it');
  // The address reproduces the session's start.
  const q = new URLSearchParams(location.search);
  q.delete('trace');
  q.delete('at');
  q.set('live', '1');
  q.set('nodes', String(nodes));
  q.set('seed', String(live.seed()));
  history.replaceState(null, '', `${location.pathname}?${q}`);
  playing = true;
  updatePlayButton();
  liveRefresh(true);
  root.focus();
  return true;
}

function stopLive() {
  if (!live) return;
  live.free();
  live = null;
  playing = false;
  $('livebar').hidden = true;
  $('timeline').disabled = false;
  for (const b of document.querySelectorAll('[data-jump]')) b.disabled = false;
}

// Runs the session forward; an invariant violation (a Raft bug) stops it.
function liveAdvance(ms) {
  try {
    live.advance(ms);
  } catch (err) {
    playing = false;
    updatePlayButton();
    showError(`The live session stopped: ${err.message || err}`);
  }
  liveRefresh(false);
}

// Takes in new events (the state only changes with them) and redraws.
function liveRefresh(force) {
  if (!live) return;
  const n = live.len();
  if (force || n !== total || !state) {
    total = at = n;
    state = JSON.parse(live.state_json());
    $('timeline').max = String(total);
    $('timeline').value = String(total);
  }
  liveDue = JSON.parse(live.in_flight_json());
  // Time runs on between events: timers and messages move with it.
  state.t = live.now();
  draw();
}

// One action of the live bar: `what` names it in errors, `need` is what
// must be selected ('node', 'msg' or nothing), `act` does it and returns a
// line for #livemsg.
function liveAct(what, need, act) {
  if (!live) {
    showError(`${what}: only in a live session (press L or the Live… button)`);
    return;
  }
  const sel = selected && selected.kind === need ? selected.id : null;
  if (need && sel == null) {
    showError(`${what}: select a ${need === 'node' ? 'node (click it, or press 1…9)' : 'message (click it)'} first`);
    return;
  }
  try {
    const said = act(sel);
    showError('');
    setText($('livemsg'), said);
  } catch (err) {
    showError(`${what}: ${err.message || err}`);
  }
  liveRefresh(true);
}

const LIVE_ACTIONS = {
  stop: ['stop', 'node', (id) => { live.stop(id); return `n${id} stopped (crashed)`; }],
  restart: ['restart', 'node', (id) => { live.restart(id); return `n${id} restarted from its disk`; }],
  timeout: ['time out', 'node', (id) => { live.timeout(id); return `n${id}'s election timer fired`; }],
  partition: ['partition', 'node', (id) => { live.partition(id); return `n${id} cut off from all others`; }],
  remove: ['remove', 'node', (id) => { live.remove_node(id); return `removing n${id} from the configuration`; }],
  snapshot: ['snapshot', 'node', (id) => `n${id} snapshot at index ${live.snapshot(id)}, log compacted`],
  request: ['client request', null, () => {
    const to = selected && selected.kind === 'node' ? selected.id : 0;
    const c = live.client_request(to);
    return `client ${c}: put sent to ${to ? 'n' + to : 'the leader'}`;
  }],
  drop: ['drop', 'msg', (id) => { live.drop_message(id); selected = null; return `message ${id} dropped`; }],
  heal: ['heal', null, () => { live.heal(); return 'every link restored'; }],
  add: ['add node', null, () => `adding n${live.add_node()} (a learner first, a voter once caught up)`],
  download: ['download trace', null, () => downloadTrace()],
};

function downloadTrace() {
  const name = `live-seed-${live.seed()}.rtrace`;
  const blob = new Blob([live.trace_text()], { type: 'text/plain' });
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = downloadUrl;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  root.dataset.download = downloadUrl; // the latest download, for tests
  return `${name} (${live.len()} events)`;
}

function runLive(name) {
  const [what, need, act] = LIVE_ACTIONS[name];
  liveAct(what, need, act);
}

function selectNode(id) {
  if (!state || !state.nodes[id]) return;
  selected = { kind: 'node', id };
  draw();
}

function showLiveForm() {
  const f = $('liveform');
  f.hidden = !f.hidden;
  if (!f.hidden) $('liveseed').focus();
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
  ['L', 'start a live session (the real core in the page)', () => showLiveForm()],
  ['1 … 9', 'live: select node n1 … n9', null],
  ['x', 'live: stop (crash) the selected node', () => runLive('stop')],
  ['r', 'live: restart the selected node', () => runLive('restart')],
  ['t', 'live: time out the selected node (its election timer fires)', () => runLive('timeout')],
  ['p', 'live: partition the selected node away', () => runLive('partition')],
  ['h', 'live: heal all partitions', () => runLive('heal')],
  ['d', 'live: drop the selected message', () => runLive('drop')],
  ['w', 'live: client request (put) to the selected node, or the leader', () => runLive('request')],
  ['a', 'live: add a node', () => runLive('add')],
  ['m', 'live: remove the selected node', () => runLive('remove')],
  ['n', 'live: snapshot the selected node', () => runLive('snapshot')],
  ['D', 'live: download the trace', () => runLive('download')],
  ['→ (live)', 'advance 10 ms (one tick)', null],
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
  else if (LIVE_KEYS[k] && !e.ctrlKey && !e.metaKey && !e.altKey) runLive(LIVE_KEYS[k]);
  else if (/^[1-9]$/.test(k) && live) selectNode(Number(k));
  else if (k === 'l' || k === 'L') showLiveForm();
  else if (k === '?') showHelp($('helpbox').hidden);
  else if (k === 'Escape') { showHelp(false); selected = null; draw(); }
  else handled = false;
  if (handled) {
    e.preventDefault();
    e.stopPropagation();
  }
});

const LIVE_KEYS = {
  x: 'stop', r: 'restart', t: 'timeout', p: 'partition', h: 'heal', d: 'drop',
  w: 'request', a: 'add', m: 'remove', n: 'snapshot', D: 'download',
};

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

$('nodetable').addEventListener('click', (e) => {
  const tr = e.target.closest('tr[data-node]');
  if (tr) selectNode(Number(tr.dataset.node));
});
$('livebtn').onclick = showLiveForm;
$('liveform').onsubmit = (e) => {
  e.preventDefault();
  const seedText = $('liveseed').value.trim();
  const seed = seedText === '' ? Math.floor(Math.random() * 1e6) : Number(seedText);
  if (Number($('speed').value) >= 1) $('speed').value = '0.1'; // messages visible
  startLive(Number($('livenodes').value), seed);
};
for (const name of Object.keys(LIVE_ACTIONS)) {
  $(`live-${name}`).onclick = () => runLive(name);
}
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
  const speed = q.get('speed');
  if (speed && [...$('speed').options].some((o) => o.value === speed)) $('speed').value = speed;
  draw();
  if (q.get('live') === '1' && !trace) {
    if (!speed) $('speed').value = '0.1';
    const seed = q.get('seed') != null ? Number(q.get('seed')) : Math.floor(Math.random() * 1e6);
    startLive(Number(q.get('nodes') || 5), seed);
  } else if (trace) {
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
