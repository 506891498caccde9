// The page: loads a trace into the Rust replay model (viz_wasm.js, built
// by wasm-bindgen) and draws the state after the current event. All Raft
// knowledge lives in Rust (the state, the narration, the badges); this file
// only draws, plays, runs tours and handles input.
//
// A classic script, not a module (browsers refuse modules from file://, and
// the book's frames must work when the book is opened from disk): the glue
// of `wasm-bindgen --target no-modules` defines the global `wasm_bindgen`.
(() => {
'use strict';
const { Viewer, Live } = wasm_bindgen;

const $ = (id) => document.getElementById(id);
const root = $('viz');
const canvas = $('cluster');
const ctx = canvas.getContext('2d');
const fromDisk = location.protocol === 'file:';

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
let tour = null;        // {title, stops: [{at, caption, look}]} while touring
let stopAt = null;      // playback pauses when it reaches this event (tours)

// ----- helpers -------------------------------------------------------------

// A colour per term, neighbouring terms clearly different. A fixed palette
// with no pure greens or blacks, which the page keeps for roles and markers.
const TERM_LIGHT = ['#cfe0fb', '#fcd9b6', '#e3d1f5', '#f9c9d6', '#fdf0a6', '#c9ecec', '#e8d7c3', '#d9dde8'];
const TERM_DARK = ['#2f6bd0', '#d9751c', '#8b4fc9', '#c83d6b', '#b59a00', '#1d8f8f', '#8a5a2b', '#59627a'];
function termColour(term, light) {
  if (!term) return light ? '#eeeeee' : '#9a9aa0';
  const k = (term - 1) % TERM_LIGHT.length;
  return light ? TERM_LIGHT[k] : TERM_DARK[k];
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
  tour = null;
  stopAt = null;
  $('tourbar').hidden = true;
  header = JSON.parse(viewer.header_json());
  total = viewer.len();
  wallClock = (header.meta && header.meta.clock === 'wall_us') || header.source === 'node' || header.source === 'merge';
  // A simulated millisecond at 1× is a millisecond on screen: messages
  // would be gone before they are seen. 0.1× (as in live mode) is the
  // default for simulator traces, unless the address chose a speed; real
  // clusters' traces are slower by nature.
  if (!speedChosen) $('speed').value = wallClock ? '1' : '0.1';
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
  if (fromDisk) {
    showError(`Cannot read ${url}: a page opened from disk may not read other files. ` +
      `Serve it instead: cdsctl viz ${url.split('/').pop()} (the book's tours work from disk).`);
    return false;
  }
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

function seek(n, noDraw) {
  if (live) return liveRefresh(true);
  if (!viewer) return;
  at = Math.max(0, Math.min(total, n));
  state = JSON.parse(viewer.state_json(at));
  if (!noDraw) draw();
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

// Shows the next (or previous) event that starts a moment of kind `what`:
// the view after that event, so the moment is the event just applied.
function jump(what, back) {
  if (!viewer) return;
  // The event shown now is `at - 1`; back looks before it, forward after.
  const i = back ? (at >= 2 ? viewer.find_prev(at - 1, what) : -1) : viewer.find_next(at, what);
  if (i >= 0) {
    playing = false;
    updatePlayButton();
    seek(i + 1);
    playT = state.t;
  } else {
    setText($('said'), `No ${back ? 'earlier' : 'later'} ${MOMENT_NAMES[what]} in this trace.`);
  }
}
const MOMENT_NAMES = { election: 'election', config: 'configuration change', snapshot: 'snapshot', fault: 'fault' };

// Playback maps trace time to wall time at `speed`: a second of a sim trace
// (1000 ms) takes one second at 1×; a real cluster's µs clock likewise.
function frame(now) {
  const t0 = performance.now();
  frameBody(now);
  if (timeParts) {
    const ms = performance.now() - t0;
    if (!(partMax.frame >= ms)) partMax.frame = +ms.toFixed(1);
  }
  requestAnimationFrame(frame);
}

function frameBody(now) {
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
    let next = viewer.index_after_time(at, playT);
    // A tour pauses at its stops, so each caption can be read.
    if (stopAt != null && next >= stopAt && at < stopAt) next = stopAt;
    const moved = next !== at;
    if (moved) seek(next, true);
    if (at >= total || (stopAt != null && at === stopAt)) {
      playing = false;
      stopAt = null;
      if (moved) draw();
    } else if (state) {
      // Between events time runs on: messages travel, timer arcs shrink.
      // Only the canvas depends on the time; the rest only on events.
      state.t = Math.max(state.t, Math.floor(playT));
      if (moved) draw();
      else drawCluster();
    }
    updatePlayButton();
  }
}

function updatePlayButton() {
  setText($('play'), playing ? '❚❚' : '▶');
}

// Sets an element's HTML only when it changed. The last HTML set is kept
// aside: reading innerHTML back would serialize the element every frame.
const lastHtml = new Map();
function setHtml(el, html) {
  if (lastHtml.get(el) === html) return;
  lastHtml.set(el, html);
  el.innerHTML = html;
}

function togglePlay() {
  if (live) {
    playing = !playing;
    liveAcc = 0;
    updatePlayButton();
    if (!playing) draw();
    return;
  }
  if (!viewer) return;
  if (at >= total) seek(0);
  playing = !playing;
  if (playing && state) playT = state.t;
  if (playing && tour) stopAt = nextStop(at);
  updatePlayButton();
  if (!playing) draw(); // the text panels, throttled while playing
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

const PARTS = [drawCluster, drawLogs, drawConfig, drawNodeTable, drawDetails, drawStatus, drawSaid, drawTour, drawTimeline];
// `?perf=1`: the slowest time of each part of a draw, by name.
const partMax = {};
let timeParts = false;

// While playing, the canvas is drawn every frame but the text panels at
// most TEXT_HZ times a second: nobody reads text changing faster, and
// laying out a few hundred log cells every frame would cost frames. When
// playback passes more than FAST_EVENTS a second the logs are too fast to
// read at all: they wait, dimmed, until playback slows down or stops.
const TEXT_HZ = 6;
const FAST_EVENTS = 1000;
let textDrawn = 0;
let textAt = 0; // the event shown when the text was last drawn

function draw() {
  const now = performance.now();
  let parts = PARTS;
  if (playing) {
    const since = now - textDrawn;
    if (since < 1000 / TEXT_HZ) {
      parts = [drawCluster];
    } else {
      const fast = (Math.abs(at - textAt) * 1000) / since > FAST_EVENTS;
      if (fast) parts = PARTS.filter((p) => p !== drawLogs);
    }
  }
  if (parts.length > 1) {
    textDrawn = now;
    textAt = at;
    $('logs').classList.toggle('stale', parts !== PARTS);
  }
  if (!timeParts) {
    for (const part of parts) part();
    return;
  }
  for (const part of parts) {
    const t0 = performance.now();
    part();
    const ms = performance.now() - t0;
    if (!(partMax[part.name] >= ms)) partMax[part.name] = +ms.toFixed(1);
  }
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
  drawCuts(pos);
  drawJoint();
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
    const outside = ['spare', 'removed'].includes(n.member);
    if (n.paused || outside) ctx.setLineDash([4, 4]);
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
    let label = roleLabel(n);
    if (isCutOff(id)) label += ' · cut off';
    ctx.fillText(label, p.x, p.y + NODE_R + 16);
    let below = NODE_R + 29;
    // Votes received while campaigning.
    if (n.campaign) {
      const c = n.campaign;
      ctx.fillStyle = '#6b4e00';
      const denied = c.denied.length ? `, refused ${c.denied.map((x) => 'n' + x).join(', ')}` : '';
      ctx.fillText(`${c.pre ? 'pre-votes' : 'votes'} ${c.granted.map((x) => 'n' + x).join(', ')}${denied}`, p.x, p.y + below);
      below += 13;
    }
    // A snapshot on its way in: a progress bar.
    if (n.snap_in) {
      const s = n.snap_in;
      const bw = 76, bx = p.x - bw / 2, by = p.y + below - 8;
      ctx.fillStyle = '#e4e4e7';
      ctx.fillRect(bx, by, bw, 6);
      ctx.fillStyle = '#1f7a3a';
      ctx.fillRect(bx, by, s.total ? (bw * Math.min(s.got, s.total)) / s.total : 0, 6);
      ctx.fillStyle = '#1d1d1f';
      ctx.font = '10px system-ui';
      ctx.fillText(`snapshot ${s.index}: ${s.got}${s.total ? '/' + s.total : ''} B`, p.x, by + 17);
    }
  }
}

// A node's role and its place in the configuration, as its label says it:
// `follower · learner`, `leader, leaving`, `spare`, `down`.
function roleLabel(n) {
  let label = n.role === 'precandidate' ? 'pre-candidate' : n.role;
  if (n.paused) label += ' (paused)';
  const m = n.member;
  if (m === 'leaving' && n.role === 'leader') return `${label}, leaving`;
  if (m === 'spare') return n.down ? 'spare (down)' : 'spare';
  if (m && m !== 'voter' && m !== 'unknown') label += ` · ${m}`;
  return label;
}

// Cut links: a red dashed line with a cross. Cut both ways: the cross in
// the middle; one way only: an arrow toward the node that cannot be reached.
function drawCuts(pos) {
  const cut = new Set((state.blocked || []).map(([a, b]) => `${a}-${b}`));
  ctx.save();
  ctx.strokeStyle = 'rgba(200,40,40,0.6)';
  ctx.fillStyle = 'rgba(200,40,40,0.85)';
  for (const [a, b] of state.blocked || []) {
    if (!pos[a] || !pos[b]) continue;
    const both = cut.has(`${b}-${a}`);
    if (both && a > b) continue; // drawn once
    const A = pos[a], B = pos[b];
    ctx.setLineDash([6, 5]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(A.x, A.y);
    ctx.lineTo(B.x, B.y);
    ctx.stroke();
    ctx.setLineDash([]);
    const mx = (A.x + B.x) / 2, my = (A.y + B.y) / 2;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(mx - 5, my - 5); ctx.lineTo(mx + 5, my + 5);
    ctx.moveTo(mx + 5, my - 5); ctx.lineTo(mx - 5, my + 5);
    ctx.stroke();
    if (!both) {
      // Arrowhead near b: messages from a to b are lost.
      const ang = Math.atan2(B.y - A.y, B.x - A.x);
      const tx = B.x - Math.cos(ang) * (NODE_R + 10), ty = B.y - Math.sin(ang) * (NODE_R + 10);
      ctx.beginPath();
      ctx.moveTo(tx, ty);
      ctx.lineTo(tx - 11 * Math.cos(ang - 0.4), ty - 11 * Math.sin(ang - 0.4));
      ctx.lineTo(tx - 11 * Math.cos(ang + 0.4), ty - 11 * Math.sin(ang + 0.4));
      ctx.fill();
    }
  }
  ctx.restore();
}

// A joint configuration: both voter sets, named, in the corner.
function drawJoint() {
  const c = state.config;
  if (!c || !c.outgoing || !c.outgoing.length) return;
  const fmt = (xs) => xs.map((x) => 'n' + x).join(' ');
  ctx.save();
  ctx.textAlign = 'left';
  ctx.font = 'bold 12px system-ui';
  ctx.fillStyle = '#7a3ea1';
  ctx.fillText('joint consensus: a majority of each set', 10, 18);
  ctx.font = '12px system-ui';
  ctx.fillStyle = '#1d1d1f';
  ctx.fillText(`old voters: ${fmt(c.outgoing)}`, 10, 34);
  ctx.fillText(`new voters: ${fmt(c.voters)}`, 10, 50);
  ctx.restore();
}

let msgHits = [];

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

// The logs, one row per node and one cell per entry (its index and term),
// as HTML so they stay readable and selectable. Rows share their columns:
// a window of indexes chosen by logWindow, the same for every row.
const CELL_W = 30; // px per cell, borders included (viz.css .cell)
function drawLogs() {
  const el = $('logs');
  if (!state) {
    setHtml(el, '');
    logGrid = null;
    return;
  }
  const ids = nodeIds();
  if (logsWidth == null) logsWidth = el.clientWidth;
  // Room for the name on the left and the commit summary on the right.
  const cap = Math.max(8, Math.floor(Math.max(300, logsWidth - 200) / CELL_W));
  const win = logWindow(ids.map((id) => state.nodes[id]), cap);
  const terms = new Set();
  // Each row's cells as [class, background, index text, label]; a cell's
  // tooltip is written when the pointer reaches it (cellTitle), not here.
  const rows = ids.map((id) => {
    const n = state.nodes[id];
    const lg = n.log;
    const first = lg.first || 1;
    const termAt = termLookup(lg.terms || []);
    const cells = [];
    let prev = null;
    for (const seg of win) {
      if (prev != null && seg[0] > prev + 1) {
        cells.push(['cell gap', '', '', `⋯${seg[0] - prev - 1}`]);
      }
      for (let i = seg[0]; i <= seg[1]; i++) {
        let cls = 'cell', bg = '', label = '';
        const snap = lg.snap && i === lg.snap;
        if (snap) cls += ' snapmark';
        if (i < first) {
          cls += ' gone';
          label = snap ? '◆' : '·';
        } else if (i > lg.last) {
          cls += ' empty';
        } else {
          const t = termAt(i);
          terms.add(t);
          bg = termColour(t, true);
          label = t != null ? `t${t}` : '?';
          if (i <= n.commit) cls += ' cm';
          if (i <= n.applied) cls += ' ap';
        }
        cells.push([cls, bg, String(i), label]);
      }
      prev = seg[1];
    }
    // Padding to `cap` cells keeps every row's shape, so the grid is built
    // once and then only patched.
    while (cells.length < cap) cells.push(['cell pad', '', '', '']);
    const sum = `c ${n.commit} · a ${n.applied}${lg.snap ? ` · s ${lg.snap}` : ''}`;
    return { id, cells, sum };
  });
  const key = [...terms].filter((t) => t != null).sort((x, y) => x - y)
    .map((t) => `<span class="tkey" style="background:${termColour(t, true)}">term ${t}</span>`).join('');
  // The structure (rows, cells per row) rarely changes: then only the
  // cells that differ are touched, which keeps playback at 60 fps.
  const shape = rows.map((r) => `${r.id}:${r.cells.length}`).join(',');
  if (!logGrid || logGrid.shape !== shape) {
    // The summary sits left of the cells, so the padding cells at the end
    // of a short log leave no gap before it.
    const html = rows.map((r) => `<div class="lrow" data-node="${r.id}"><span class="lname">n${r.id}</span><span class="lsum" title="c: commit index · a: applied index · s: snapshot index"></span><span class="cells">` +
      r.cells.map(() => '<span class="cell"><i></i><b></b></span>').join('') +
      '</span></div>').join('') +
      '<div class="lfoot"><span class="tkeys"></span> <span class="hint">c commit · a applied · s snapshot index; in the cells: underline committed, ✓ applied, purple frame the last entry in the snapshot, grey compacted · g: legend</span></div>';
    setHtml(el, html);
    const rowEls = [...el.querySelectorAll('.lrow')];
    logGrid = {
      shape,
      rows: rowEls.map((r) => ({ cells: [...r.querySelectorAll('.cell')].map((c) => ({ el: c, i: c.firstChild, b: c.lastChild, was: [] })), sum: r.querySelector('.lsum') })),
      keys: el.querySelector('.tkeys'),
    };
  }
  rows.forEach((r, k) => {
    const g = logGrid.rows[k];
    r.cells.forEach((c, j) => {
      const d = g.cells[j];
      const w = d.was;
      if (w[0] !== c[0]) d.el.className = c[0];
      if (w[1] !== c[1]) d.el.style.background = c[1];
      if (w[2] !== c[2]) d.i.textContent = c[2];
      if (w[3] !== c[3]) d.b.textContent = c[3];
      d.was = c;
    });
    setText(g.sum, r.sum);
  });
  setHtml(logGrid.keys, key);
}
let logGrid = null;   // the log rows' elements, reused while their shape holds
let logsWidth = null; // #logs' width, measured once and on resize
window.addEventListener('resize', () => { logsWidth = null; draw(); });

// A log cell's tooltip, in words, written when the pointer reaches it.
$('logs').addEventListener('mouseover', (e) => {
  const c = e.target.closest('.cell');
  const row = c && c.closest('.lrow');
  if (!c || !row || !state) return;
  const n = state.nodes[row.dataset.node];
  const i = Number(c.firstChild.textContent);
  if (!n || !i) {
    c.title = c.classList.contains('gap') ? 'entries not shown, to fit the window' : '';
    return;
  }
  const lg = n.log;
  let t = `n${n.id} entry ${i}`;
  if (i < (lg.first || 1)) t += ': compacted away';
  else if (i > lg.last) t += ': not in its log';
  else {
    t += `, term ${termLookup(lg.terms || [])(i)}`;
    if (i <= n.commit) t += ', committed';
    if (i <= n.applied) t += ', applied';
  }
  if (lg.snap && i === lg.snap) t += ' (its snapshot ends here)';
  c.title = t;
});

// The term of entry i from `[first, last, term]` runs (sorted by index).
function termLookup(runs) {
  return (i) => {
    let lo = 0, hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const [a, b, t] = runs[mid];
      if (i < a) hi = mid - 1;
      else if (i > b) lo = mid + 1;
      else return t;
    }
    return null;
  };
}

// Which indexes the log rows show, as sorted [lo, hi] segments using at
// most `cap` cells (a gap between segments takes one). Everything, when it
// fits; otherwise the newest entries, plus a little around what a reader
// looks for: each node's commit, applied, snapshot and first and last
// entries.
function logWindow(nodes, cap) {
  let maxLast = 1, minFirst = Infinity;
  for (const n of nodes) {
    maxLast = Math.max(maxLast, n.log.last || 0, n.log.snap || 0);
    minFirst = Math.min(minFirst, n.log.snap ? n.log.snap : (n.log.first || 1));
  }
  if (!isFinite(minFirst)) minFirst = 1;
  const lo0 = Math.max(1, Math.min(minFirst, maxLast));
  if (maxLast - lo0 + 1 <= cap) {
    // All that matters fits: show it, extended back to fill the width.
    return [[Math.max(1, maxLast - cap + 1), maxLast]];
  }
  const marks = new Set();
  for (const n of nodes) {
    for (const x of [n.commit, n.applied, n.log.snap, n.log.first, n.log.last]) {
      if (x && x >= 1 && x <= maxLast) marks.add(x);
    }
  }
  for (let around = 2; around >= 0; around--) {
    const tail = Math.max(4, Math.floor(cap / 3));
    let segs = [[Math.max(1, maxLast - tail + 1), maxLast]];
    for (const m of [...marks].sort((x, y) => y - x)) {
      segs.push([Math.max(1, m - around), Math.min(maxLast, m + around)]);
    }
    segs.sort((x, y) => x[0] - y[0]);
    const merged = [];
    for (const sg of segs) {
      const last = merged[merged.length - 1];
      // Segments closer than 3 cells are joined (a gap cell saves nothing).
      if (last && sg[0] <= last[1] + 3) last[1] = Math.max(last[1], sg[1]);
      else merged.push([...sg]);
    }
    const used = merged.reduce((acc, [x, y]) => acc + (y - x + 1), 0) + merged.length - 1;
    if (used <= cap) return merged;
    if (around === 0) {
      // Still too many: keep the newest segments that fit.
      const out = [];
      let room = cap;
      for (const sg of merged.reverse()) {
        const len = sg[1] - sg[0] + 1 + (out.length ? 1 : 0);
        if (len > room) {
          if (room > 2) out.unshift([sg[1] - (room - 2), sg[1]]);
          break;
        }
        room -= len;
        out.unshift(sg);
      }
      return out;
    }
  }
  return [[Math.max(1, maxLast - cap + 1), maxLast]];
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
  const fmt = (xs) => (xs && xs.length ? `{${xs.map((x) => 'n' + x).join(', ')}}` : '{}');
  let text = `voters ${fmt(c.voters)}`;
  if (c.outgoing && c.outgoing.length) text = `joint consensus:\n  old voters ${fmt(c.outgoing)}\n  new voters ${fmt(c.voters)}`;
  if (c.learners && c.learners.length) text += `\nlearners ${fmt(c.learners)}`;
  const others = nodeIds().filter((id) => ['spare', 'removed'].includes(state.nodes[id].member));
  if (others.length) text += `\nnot members ${fmt(others)}`;
  if (c.index) text += `\n(${c.change.replace(/_/g, ' ')} at entry ${c.index})`;
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
    setHtml(el, '');
    return;
  }
  const rows = nodeIds().map((id) => {
    const n = state.nodes[id];
    const role = n.paused ? `${n.role} (paused)` : n.role;
    const sel = selected && selected.kind === 'node' && selected.id === id ? ' class="sel"' : '';
    const member = n.member === 'unknown' ? '' : n.member;
    return `<tr${sel} data-node="${id}"><td>n${id}</td><td class="role">${role}</td><td class="member">${member}</td><td class="term">${n.term}</td>` +
      `<td class="commit">${n.commit}</td><td class="applied">${n.applied}</td><td>${n.log.first}..${n.log.last}</td></tr>`;
  });
  const html = '<tr><th>node</th><th>role</th><th>member</th><th>term</th><th>commit</th><th>applied</th><th>log</th></tr>' + rows.join('');
  setHtml(el, html);
}

// The selected node or message in words (what the JSON says, readable),
// under the narration of the event just shown.
function drawDetails() {
  const el = $('details');
  if (!state) return;
  const said = state.said ? `Event ${state.said.i + 1}: ${state.said.text}.` : 'Nothing has happened yet.';
  let body = '';
  if (selected && selected.kind === 'node' && state.nodes[selected.id]) body = describeNode(state.nodes[selected.id]);
  else if (selected && selected.kind === 'msg') {
    const m = (state.msgs || []).find((x) => x.id === selected.id);
    body = m ? `Message ${m.id}: n${m.from} → n${m.to}, sent at ${fmtTime(m.t)}\n${m.about || m.m.type}` : '';
  }
  const html = `<p class="said2"></p>${body ? '<pre class="about"></pre>' : '<p class="hint">Click a node or a message for what it holds.</p>'}`;
  if (el.dataset.shape !== html) {
    el.innerHTML = html;
    el.dataset.shape = html;
  }
  setText(el.querySelector('.said2'), said);
  if (body) setText(el.querySelector('.about'), body);
}

function describeNode(n) {
  const lines = [];
  const who = [`n${n.id}`, roleLabel(n), `term ${n.term}`];
  if (n.vote != null) who.push(`voted for n${n.vote}`);
  if (n.leader != null && n.leader !== n.id) who.push(`follows n${n.leader}`);
  lines.push(who.join(' · '));
  const lg = n.log;
  const runs = (lg.terms || []).map(([a, b, t]) => (a === b ? `${a}: t${t}` : `${a}..${b}: t${t}`));
  if (lg.last >= lg.first) lines.push(`log: entries ${lg.first}..${lg.last} (${runs.join(', ')})`);
  else lines.push('log: empty');
  if (lg.snap) lines.push(`snapshot up to entry ${lg.snap}${lg.first > 1 ? `; entries before ${lg.first} compacted` : ''}`);
  lines.push(`commit ${n.commit} · applied ${n.applied}`);
  if (n.config) {
    const c = n.config;
    const f = (xs) => xs.map((x) => 'n' + x).join(' ');
    lines.push(c.outgoing.length ? `its configuration: joint, old ${f(c.outgoing)} / new ${f(c.voters)}` : `its configuration: voters ${f(c.voters)}${c.learners.length ? `, learners ${f(c.learners)}` : ''}`);
  }
  if (n.campaign) {
    const c = n.campaign;
    lines.push(`${c.pre ? 'pre-vote' : 'election'} for term ${c.term}: granted by ${c.granted.map((x) => 'n' + x).join(', ')}${c.denied.length ? `; refused by ${c.denied.map((x) => 'n' + x).join(', ')}` : ''}`);
  }
  if (n.snap_in) {
    const s = n.snap_in;
    lines.push(`receiving snapshot ${s.index} from ${s.from ? 'n' + s.from : 'the leader'}: ${s.got}${s.total ? ` of ${s.total}` : ''} bytes`);
  }
  if (n.timeout_range && n.reset != null && !n.down && n.role !== 'leader') {
    lines.push(`election timer: restarted at ${fmtTime(n.reset)}, fires ${n.timeout_range[0]}..${n.timeout_range[1]} later`);
  }
  if (n.last) lines.push(`its last event: #${n.last.i + 1} ${n.last.ev} at ${fmtTime(n.last.t)}`);
  return lines.join('\n');
}

// The narration line under the view: the event just shown, in words.
function drawSaid() {
  if (!state) return;
  const s = state.said;
  setText($('said'), s ? `${s.i + 1}. ${s.text}.` : 'Nothing has happened yet: press space to play, → to step.');
}

function drawTimeline() {
  const v = String(at);
  if ($('timeline').value !== v) $('timeline').value = v;
}

function drawStatus() {
  if (!state) return;
  const leader = state.leader != null ? `leader n${state.leader}` : 'no leader';
  const term = state.leader != null ? state.leader_term : state.max_term;
  setText($('status'), `event ${at} / ${total} · t=${fmtTime(state.t)} · ${leader} · term ${term}`);
}

// ----- tours ---------------------------------------------------------------
//
// A tour is a trace and a list of stops (`at`: events applied, as in
// `?at=`; a caption; what to look at). Tours are JavaScript files that call
// `vizTour({...})` with the trace text inside, so a page opened from disk
// (the book from file://) can load them with a script tag, where fetch()
// is refused. book/gen/tours.py writes them.

function loadTour(url) {
  return new Promise((resolve) => {
    window.vizTour = (t) => {
      window.vizTour = null;
      resolve(t);
    };
    const el = document.createElement('script');
    el.src = url;
    // A script that ran without calling vizTour is not a tour.
    el.onload = () => {
      if (!window.vizTour) return;
      window.vizTour = null;
      showError(`${url} is not a tour (it never calls vizTour)`);
      resolve(null);
    };
    el.onerror = () => {
      showError(`Cannot load the tour ${url}` + (fromDisk ? ' (is the file next to this page?)' : ''));
      resolve(null);
    };
    document.head.appendChild(el);
  });
}

async function startTour(url, startStop) {
  const t = await loadTour(url);
  if (!t) return false;
  // Stops: whole event counts in increasing order, each with a caption.
  const stopsOk = Array.isArray(t.stops) && t.stops.length > 0 &&
    t.stops.every((st, i) => Number.isInteger(st.at) && st.at >= 0 && typeof st.caption === 'string' &&
      (i === 0 || st.at > t.stops[i - 1].at));
  if (typeof t.trace !== 'string' || !stopsOk) {
    showError(`${url} is not a tour (it needs a trace, and stops with increasing event numbers and captions)`);
    return false;
  }
  if (!(await loadText(t.trace, t.name || url, 0))) return false;
  tour = t;
  $('tourbar').hidden = false;
  setText($('tourtitle'), `Tour: ${t.title}`);
  gotoStop(Math.max(0, Math.min(t.stops.length - 1, startStop || 0)));
  return true;
}

// The stop shown now: the last one at or before the current event.
function currentStop() {
  if (!tour) return -1;
  let k = -1;
  tour.stops.forEach((st, i) => { if (st.at <= at) k = i; });
  return k;
}

function nextStop(from) {
  const st = tour && tour.stops.find((x) => x.at > from);
  return st ? st.at : null;
}

function gotoStop(k) {
  if (!tour || k < 0 || k >= tour.stops.length) return;
  playing = false;
  stopAt = null;
  updatePlayButton();
  seek(tour.stops[k].at);
  if (state) playT = state.t;
}

// Next: play on to the next stop (the events between are the story), or
// jump there at once when `now` is set.
function tourNext(now) {
  if (!tour) return;
  const to = nextStop(at);
  if (to == null) return;
  if (now) return gotoStop(tour.stops.findIndex((x) => x.at === to));
  if (state) playT = state.t;
  stopAt = to;
  playing = true;
  updatePlayButton();
}

function tourPrev() {
  if (!tour) return;
  const k = currentStop();
  // On a stop: the one before it; between stops: the one just passed.
  const onStop = k >= 0 && tour.stops[k].at === at;
  gotoStop(onStop ? k - 1 : k);
}

function drawTour() {
  if (!tour) return;
  const k = currentStop();
  const on = k >= 0 && tour.stops[k].at === at;
  const st = k >= 0 ? tour.stops[k] : null;
  setText($('tourpos'), on ? `stop ${k + 1} of ${tour.stops.length}` : (k < 0 ? `before stop 1 of ${tour.stops.length}` : `after stop ${k + 1} of ${tour.stops.length}`));
  setText($('caption'), on ? st.caption : (playing ? '…' : 'Between stops: press ] (or Enter) to play on to the next one, [ to go back.'));
  setText($('look'), on && st.look ? `Look at: ${st.look}` : '');
  $('tourprev').disabled = k <= 0 && !(k === 0 && !on);
  $('tournext').disabled = nextStop(at) == null;
  root.dataset.stop = on ? String(k + 1) : '';
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
  ['] or Enter / [', 'tour: play on to the next stop / back to the previous one', () => tourNext(false)],
  ['g', 'legend: what the colours and shapes mean', () => showLegend($('legendbox').hidden)],
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
  if (show) $('legendbox').hidden = true;
}

function showLegend(show) {
  $('legendbox').hidden = !show;
  if (show) $('helpbox').hidden = true;
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
  else if (k === 'g' || k === 'G') showLegend($('legendbox').hidden);
  else if (k === ']' || (k === 'Enter' && tour)) tourNext(false);
  else if (k === '[') tourPrev();
  else if (k === 'Escape') { showHelp(false); showLegend(false); selected = null; draw(); }
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

$('speed').addEventListener('change', () => { speedChosen = true; });

function bumpSpeed(d) {
  speedChosen = true;
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
$('legendbtn').onclick = () => showLegend($('legendbox').hidden);
$('legendclose').onclick = () => showLegend(false);
$('tournext').onclick = () => tourNext(false);
$('tourprev').onclick = () => tourPrev();
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

// The wasm module: fetched over HTTP; from disk (file://, where fetch is
// refused) its bytes come from pkg/viz_wasm_bg.wasm.js, a script holding
// them in base64 that viz-wasm/build.sh writes.
async function initWasm() {
  if (!fromDisk) {
    await wasm_bindgen({ module_or_path: 'pkg/viz_wasm_bg.wasm' });
    return;
  }
  await new Promise((ok, fail) => {
    const el = document.createElement('script');
    el.src = 'pkg/viz_wasm_bg.wasm.js';
    el.onload = ok;
    el.onerror = () => fail(new Error('pkg/viz_wasm_bg.wasm.js is missing next to this page'));
    document.head.appendChild(el);
  });
  const b64 = window.VIZ_WASM_BASE64;
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  window.VIZ_WASM_BASE64 = null;
  await wasm_bindgen({ module_or_path: bytes });
}

let speedChosen = false;

// In a frame (the book), tell the parent how tall the page is, so the
// frame can fit it without an inner scrollbar (book/theme/viz-embed.js).
function reportHeight() {
  if (window.parent === window) return;
  let last = 0;
  const send = () => {
    // The page's own height (the document's would be at least the frame's).
    const h = Math.ceil(root.getBoundingClientRect().bottom + window.scrollY + 8);
    if (h !== last) {
      last = h;
      window.parent.postMessage({ vizHeight: h, href: location.href }, '*');
    }
  };
  new ResizeObserver(send).observe(root);
  send();
}

async function main() {
  fillKeyTable();
  await initWasm();
  // After the module started: a frame that gets a height got a working page.
  reportHeight();
  const q = new URLSearchParams(location.search);
  const trace = q.get('trace');
  const tourUrl = q.get('tour');
  const speed = q.get('speed');
  if (speed && [...$('speed').options].some((o) => o.value === speed)) {
    $('speed').value = speed;
    speedChosen = true;
  }
  draw();
  if (q.get('live') === '1' && !trace && !tourUrl) {
    if (!speed) $('speed').value = '0.1';
    const seed = q.get('seed') != null ? Number(q.get('seed')) : Math.floor(Math.random() * 1e6);
    startLive(Number(q.get('nodes') || 5), seed);
  } else if (tourUrl) {
    // `stop=K` (1-based); anything else opens the first stop.
    await startTour(tourUrl, Math.max(0, (Math.floor(Number(q.get('stop'))) || 1) - 1));
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
  timeParts = true;
  const seeks = [];
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const models = []; // the model's part of a seek: state_json and parsing
  const nSeeks = Number(new URLSearchParams(location.search).get("seeks") ?? 200);
  for (let k = 0; k < nSeeks; k++) {
    const n = Math.floor(rand() * (total + 1));
    const t0 = performance.now();
    JSON.parse(viewer.state_json(n));
    models.push(performance.now() - t0);
    const t1 = performance.now();
    seek(n);
    seeks.push(performance.now() - t1);
  }
  seeks.sort((a, b) => a - b);
  models.sort((a, b) => a - b);
  // Play for three seconds at a speed that crosses the whole trace in ten.
  seek(0);
  playT = state.t;
  const span = Math.max(1, JSON.parse(viewer.state_json(total)).t - state.t);
  const frames = [];
  const slow = []; // [ms, event] of frames over 100 ms
  let last = performance.now();
  playing = true;
  $('speed').innerHTML = `<option value="${span / 10000 / (wallClock ? 1000 : 1)}" selected>perf</option>`;
  await new Promise((done) => {
    const end = last + 3000;
    // Frames are counted from the first callback on.
    let started = false;
    const tick = () => {
      // The wall clock, not the callback's frame time (which can lag
      // behind a long task that ended just before).
      const now = performance.now();
      if (!started) {
        started = true;
        last = now;
        requestAnimationFrame(tick);
        return;
      }
      frames.push(now - last);
      if (now - last > 100) slow.push([Math.round(now - last), at]);
      last = now;
      if (now < end) requestAnimationFrame(tick);
      else done();
    };
    requestAnimationFrame(tick);
  });
  playing = false;
  frames.sort((a, b) => a - b);
  const q = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))];
  const out = {
    events: total,
    load_ms: Math.round(loadMs),
    seek_ms_p50: +q(seeks, 0.5).toFixed(2),
    seek_ms_max: +seeks[seeks.length - 1].toFixed(2),
    model_ms_p50: +q(models, 0.5).toFixed(2),
    frames: frames.length,
    fps: +(frames.length / 3).toFixed(1),
    frame_ms_p50: +q(frames, 0.5).toFixed(2),
    frame_ms_p99: +q(frames, 0.99).toFixed(2),
    events_played: at,
    slow_frames: slow.slice(0, 10),
    draw_max_ms: partMax,
  };
  const pre = document.createElement('pre');
  pre.id = 'perf';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
  root.dataset.ready = '1';
}

main().catch((err) => showError(`The visualizer failed to start: ${err.message || err}`));
})();
