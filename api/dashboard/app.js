// Hopper dashboard script: polls the JSON API and redraws the page.
//
// Everything read from the API is put into the page with textContent or
// attributes, never as markup. No framework, no build step.
'use strict';

const POLL_MS = 2000;
const WINDOW_MINUTES = 30;
const COLORS = { echo: '#4e79a7', noop: '#f28e2b', ingest: '#59a14f', embed: '#e15759', summarize: '#b07aa1', webhook: '#76b7b2' };
// Declared tasks have no colour of their own: one is derived from the name.
const STATES = ['pending', 'scheduled', 'running', 'retrying', 'succeeded', 'failed', 'dead', 'cancelled'];
const SVG_NS = 'http://www.w3.org/2000/svg';

const view = {
  queues: [],          // names, in the API's order
  samples: [],         // [{at_ms, queues: {name: {pending, scheduled, running, dead}}}]
  outcomes: {},        // name -> [{minute_ms, succeeded, failed, ...}]
  deadQueue: null,     // the queue whose dead letters are shown
  jobId: null,         // the job shown in detail
  workflowId: null,    // the workflow drawn
  workflowSettled: false, // whether nothing in it can change any more
  lastHistory: 0,
};

const $ = (sel) => document.querySelector(sel);

/** Builds an element; children are nodes or text. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** The API key entered in this tab (none in open mode). */
function apiKey() {
  return sessionStorage.getItem('hopper-api-key') || '';
}

/** Calls the API; throws an Error carrying the JSON error's detail. */
async function api(path, options = {}) {
  const headers = { accept: 'application/json' };
  if (apiKey()) headers.authorization = `Bearer ${apiKey()}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method: options.method || 'GET',
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) {
    const why = body && body.detail ? body.detail : `${res.status} ${res.statusText}`;
    if (res.status === 401) toast(`${why}: enter an API key above`, true);
    throw new Error(why);
  }
  return body;
}

function toast(message, isError = false) {
  const t = $('#toast');
  t.textContent = message;
  t.className = isError ? 'error' : '';
}

function ago(ms) {
  if (ms === null || ms === undefined) return '–';
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

/** How far off a future time is: `in 12 s`, `in 5 min`, `in 3.5 h`, `in 2.0 d`. */
function until(ms) {
  const s = Math.max(0, (ms - Date.now()) / 1000);
  if (s < 60) return `in ${s.toFixed(0)} s`;
  if (s < 3600) return `in ${(s / 60).toFixed(0)} min`;
  if (s < 86400) return `in ${(s / 3600).toFixed(1)} h`;
  return `in ${(s / 86400).toFixed(1)} d`;
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : '–';
}

/** A link to a job's detail. Ids are UUIDv7 (time first), so a short form keeps the end. */
function jobLink(id, short = false) {
  return el('a', { href: `#job=${id}`, 'data-job': id, title: id }, short ? `…${id.slice(-12)}` : id);
}

function stateBadge(state) {
  return el('span', { class: `badge state-${state}`, 'data-state': state }, state);
}

/** The colour of a queue: a built-in kind's, or one derived from the task's name. */
function color(queue) {
  if (COLORS[queue]) return COLORS[queue];
  let h = 0;
  for (const c of queue) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return `hsl(${h % 360}, 55%, 50%)`;
}

/** A colour swatch of a queue (the stylesheet colours the built-in kinds; CSSOM, not markup, the others). */
function swatch(queue, tag = 'span') {
  const s = el(tag, { class: `swatch q-${queue}` });
  if (!COLORS[queue]) s.style.backgroundColor = color(queue);
  return s;
}

// ---------------------------------------------------------------- queues

async function refreshQueues() {
  const { queues } = await api('/v1/queues');
  view.queues = queues.map((q) => q.queue);
  const at = Date.now();
  const sample = { at_ms: at, queues: {} };
  for (const q of queues) {
    sample.queues[q.queue] = q;
    let row = document.querySelector(`#queues tr[data-queue="${CSS.escape(q.queue)}"]`);
    if (!row) {
      row = el('tr', { 'data-queue': q.queue }, el('th', { scope: 'row' }, swatch(q.queue), q.queue));
      for (const f of ['pending', 'scheduled', 'running', 'dead', 'workers', 'oldest', 'succeeded_rate', 'failed_rate']) {
        row.append(el('td', { 'data-field': f }));
      }
      $('#queues tbody').append(row);
    }
    const mark = row.querySelector('.swatch');
    if (mark && !COLORS[q.queue] && !mark.style.backgroundColor) mark.style.backgroundColor = color(q.queue);
    const perMin = (n) => (n / Math.max(1, q.recent_minutes)).toFixed(1);
    const values = {
      pending: q.pending, scheduled: q.scheduled, running: q.running, dead: q.dead, workers: q.workers,
      oldest: q.oldest_pending_age_ms === null ? '–' : `${(q.oldest_pending_age_ms / 1000).toFixed(1)} s`,
      succeeded_rate: perMin(q.succeeded_recent), failed_rate: perMin(q.failed_recent),
    };
    for (const [f, v] of Object.entries(values)) {
      const cell = row.querySelector(`[data-field="${f}"]`);
      if (cell.textContent !== String(v)) cell.textContent = String(v);
    }
  }
  view.samples.push(sample);
  trimSamples();
  fillQueueSelects();
  drawDepth();
}

function trimSamples() {
  const cutoff = Date.now() - WINDOW_MINUTES * 60000;
  while (view.samples.length && view.samples[0].at_ms < cutoff) view.samples.shift();
}

async function refreshHistory() {
  const h = await api(`/v1/queues/history?minutes=${WINDOW_MINUTES}`);
  // The server's samples, then the page's own newer ones.
  const newest = h.samples.length ? h.samples[h.samples.length - 1].at_ms : 0;
  view.samples = h.samples.concat(view.samples.filter((s) => s.at_ms > newest));
  trimSamples();
  view.outcomes = h.outcomes;
  drawDepth();
  drawRates();
}

function fillQueueSelects() {
  for (const id of ['#dead-queue', '#jobs-queue']) {
    const select = $(id);
    for (const q of view.queues) {
      if (!select.querySelector(`option[value="${CSS.escape(q)}"]`)) select.append(el('option', { value: q }, q));
    }
  }
  if (!view.deadQueue && view.queues.length) {
    const withDead = view.samples.length ? view.queues.find((q) => view.samples[view.samples.length - 1].queues[q]?.dead > 0) : null;
    view.deadQueue = withDead || view.queues[0];
    $('#dead-queue').value = view.deadQueue;
  }
}

// ---------------------------------------------------------------- charts

/** Draws one line chart into `target`: series = [{name, color, points: [[x, y]]}]. */
function lineChart(target, series, xMin, xMax, formatX) {
  const W = 640, H = 200, L = 40, R = 8, T = 8, B = 22;
  target.replaceChildren();
  const yMax = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const x = (v) => L + ((v - xMin) / Math.max(1, xMax - xMin)) * (W - L - R);
  const y = (v) => T + (1 - v / yMax) * (H - T - B);
  target.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
  target.append(svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
  for (const v of [0, yMax / 2, yMax]) {
    const label = svg('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end' });
    label.textContent = Number.isInteger(v) ? String(v) : v.toFixed(1);
    target.append(label);
  }
  for (const [v, anchor] of [[xMin, 'start'], [xMax, 'end']]) {
    const label = svg('text', { x: x(v), y: H - 6, 'text-anchor': anchor });
    label.textContent = formatX(v);
    target.append(label);
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(' ');
    const line = svg('polyline', { points: d, fill: 'none', stroke: s.color, 'stroke-width': 2, 'data-series': s.name });
    const title = svg('title');
    title.textContent = `${s.name}: ${s.points[s.points.length - 1][1]} now`;
    line.append(title);
    target.append(line);
  }
}

function drawDepth() {
  const samples = view.samples;
  const now = Date.now();
  const xMin = samples.length ? samples[0].at_ms : now - 60000;
  const series = view.queues.map((q) => ({
    name: q,
    color: color(q),
    points: samples.filter((s) => s.queues[q]).map((s) => {
      const d = s.queues[q];
      return [s.at_ms, d.pending + d.scheduled + d.running];
    }),
  }));
  lineChart($('#depth-chart'), series, xMin, Math.max(now, xMin + 1000), clock);
  const legend = $('#depth-legend');
  legend.replaceChildren(...view.queues.map((q) => {
    const last = samples.length ? samples[samples.length - 1].queues[q] : null;
    const depth = last ? last.pending + last.scheduled + last.running : 0;
    return el('span', { 'data-legend': q }, swatch(q, 'i'), `${q} ${depth}`);
  }));
}

function drawRates() {
  const minutes = new Map();
  for (const rows of Object.values(view.outcomes)) {
    for (const r of rows) {
      const m = minutes.get(r.minute_ms) || { succeeded: 0, failed: 0 };
      m.succeeded += r.succeeded;
      m.failed += r.failed;
      minutes.set(r.minute_ms, m);
    }
  }
  const keys = [...minutes.keys()].sort((a, b) => a - b);
  const series = [
    { name: 'succeeded', color: '#2e7d32', points: keys.map((k) => [k, minutes.get(k).succeeded]) },
    { name: 'failed', color: '#c62828', points: keys.map((k) => [k, minutes.get(k).failed]) },
  ];
  const xMin = keys.length ? keys[0] : Date.now() - 60000;
  const xMax = keys.length ? keys[keys.length - 1] : Date.now();
  lineChart($('#rate-chart'), series, xMin, Math.max(xMax, xMin + 60000), clock);
}

// ---------------------------------------------------------------- workers

async function refreshWorkers() {
  const { workers } = await api('/v1/workers');
  const body = $('#workers tbody');
  if (!workers.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'no workers registered')));
    return;
  }
  body.replaceChildren(...workers.map((w) => {
    const running = el('td', { class: 'wrap' });
    if (!w.running.length) running.append(el('span', { class: 'muted' }, 'idle'));
    w.running.slice(0, 20).forEach((id, i) => { if (i) running.append(' '); running.append(jobLink(id, true)); });
    if (w.running.length > 20) running.append(` +${w.running.length - 20} more`);
    const stale = w.heartbeat_age_ms > 10000;
    return el('tr', { 'data-worker': w.worker },
      el('td', {}, w.worker), el('td', {}, w.queue),
      el('td', { class: stale ? 'state-dead' : '' }, `${(w.heartbeat_age_ms / 1000).toFixed(1)} s ago`),
      running);
  }));
}

// ---------------------------------------------------------------- schedules

async function refreshSchedules() {
  const { schedules } = await api('/v1/schedules');
  const body = $('#schedules tbody');
  if (!schedules.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'no schedules')));
    return;
  }
  body.replaceChildren(...schedules.map((s) => {
    const next = s.next_fire_ms === undefined || s.next_fire_ms === null
      ? el('span', { class: 'muted' }, s.paused ? '–' : 'never')
      : el('time', { datetime: new Date(s.next_fire_ms).toISOString(), title: new Date(s.next_fire_ms).toISOString() },
        `${new Date(s.next_fire_ms).toLocaleString()} (${until(s.next_fire_ms)})`);
    return el('tr', { 'data-schedule': s.id },
      el('td', {}, s.id), el('td', {}, s.task),
      el('td', { 'data-field': 'timing' }, s.cron ? el('code', {}, s.cron) : `every ${duration(s.every_ms)}`),
      el('td', { 'data-field': 'timezone' }, s.cron ? (s.timezone || 'UTC') : '–'),
      el('td', { 'data-field': 'next' }, next),
      el('td', {}, el('span', { class: `badge ${s.paused ? 'state-scheduled' : 'state-running'}`, 'data-field': 'state' },
        s.paused ? 'paused' : 'active')));
  }));
}

// ---------------------------------------------------------------- workflows

const NODE_W = 168, NODE_H = 42, COL_GAP = 56, ROW_GAP = 14, DAG_PAD = 8;
// Past this many nodes the drawing would be unreadable: the counts say enough.
const MAX_DRAWN_NODES = 400;

/** `succeeded 3, queued 1` from a workflow's counts, in the nodes' life order. */
function nodeCounts(counts) {
  const order = ['waiting', 'queued', 'succeeded', 'dead', 'cancelled', 'skipped'];
  const names = Object.keys(counts || {}).sort((a, b) => order.indexOf(a) - order.indexOf(b));
  return names.filter((k) => counts[k] > 0).map((k) => `${k} ${counts[k]}`).join(', ') || '–';
}

function workflowLink(id) {
  return el('a', { href: `#workflow=${id}`, 'data-workflow-link': id, title: id }, `…${id.slice(-12)}`);
}

async function refreshWorkflows() {
  const { workflows } = await api('/v1/workflows?limit=20');
  const body = $('#workflows tbody');
  if (!workflows.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'no workflows')));
    return;
  }
  body.replaceChildren(...workflows.map((w) => el('tr', { 'data-workflow': w.id, class: w.id === view.workflowId ? 'selected' : '' },
    el('td', {}, workflowLink(w.id)),
    el('td', { 'data-field': 'name', class: 'wrap' }, w.name ?? ''),
    el('td', { 'data-field': 'state' }, stateBadge(w.state)),
    el('td', { 'data-field': 'counts' }, nodeCounts(w.counts)),
    el('td', {}, ago(w.created_at_ms)),
    el('td', {}, w.finished_at_ms ? duration(w.finished_at_ms - w.created_at_ms) : '–'))));
}

/** Each node's column: 0 for a node that waits for nothing, else 1 + its deepest dependency's. */
function depths(nodes) {
  const byIndex = new Map(nodes.map((n) => [n.index, n]));
  const depth = new Map();
  const visit = (n, seen) => {
    if (depth.has(n.index)) return depth.get(n.index);
    if (seen.has(n.index)) return 0; // a cycle cannot be planned; never loop on one
    seen.add(n.index);
    let d = 0;
    for (const i of n.deps || []) {
      const dep = byIndex.get(i);
      if (dep) d = Math.max(d, 1 + visit(dep, seen));
    }
    depth.set(n.index, d);
    return d;
  };
  for (const n of nodes) visit(n, new Set());
  return depth;
}

/** Places the nodes: one column per depth; in a column, by the mean row of their
 * dependencies (fewer crossing lines), then by index. */
function layoutDag(nodes) {
  const depth = depths(nodes);
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.index)] ||= []).push(n);
  const row = new Map();
  const mean = (n) => {
    const rows = (n.deps || []).filter((i) => row.has(i)).map((i) => row.get(i));
    return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : -1;
  };
  for (const column of columns) {
    if (!column) continue;
    column.sort((a, b) => mean(a) - mean(b) || a.index - b.index);
    column.forEach((n, i) => row.set(n.index, i));
  }
  const tallest = Math.max(0, ...columns.map((c) => (c ? c.length : 0)));
  const place = new Map();
  columns.forEach((column, d) => {
    if (!column) return;
    // Each column centred on the tallest one.
    const offset = ((tallest - column.length) * (NODE_H + ROW_GAP)) / 2;
    column.forEach((n, i) => place.set(n.index, {
      x: DAG_PAD + d * (NODE_W + COL_GAP),
      y: DAG_PAD + offset + i * (NODE_H + ROW_GAP),
    }));
  });
  return {
    place,
    width: 2 * DAG_PAD + columns.length * NODE_W + Math.max(0, columns.length - 1) * COL_GAP,
    height: 2 * DAG_PAD + tallest * NODE_H + Math.max(0, tallest - 1) * ROW_GAP,
  };
}

/** Shortens a label to `max` characters (the whole one is in the node's title). */
function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Draws a workflow's DAG: a rect per node coloured by state, a line from each dependency. */
function drawDag(target, nodes) {
  target.replaceChildren();
  const { place, width, height } = layoutDag(nodes);
  target.setAttribute('viewBox', `0 0 ${width} ${height}`);
  target.setAttribute('width', String(width));
  target.setAttribute('height', String(height));
  for (const n of nodes) {
    const to = place.get(n.index);
    for (const i of n.deps || []) {
      const from = place.get(i);
      if (!from) continue;
      const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2;
      const bend = (x2 - x1) / 2;
      target.append(svg('path', {
        class: 'edge', 'data-from': i, 'data-to': n.index,
        d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
      }));
    }
  }
  for (const n of nodes) {
    const { x, y } = place.get(n.index);
    const link = svg('a', { href: `#job=${n.job_id}` });
    const group = svg('g', { class: `dag-node state-${n.state}`, 'data-node': n.index, 'data-state': n.state, 'data-task': n.task });
    const title = svg('title');
    title.textContent = `node ${n.index} (${n.path}): ${n.task}, ${n.state}\njob ${n.job_id}` + (n.error ? `\n${n.error}` : '');
    const rect = svg('rect', { class: `state-${n.state}`, x, y, width: NODE_W, height: NODE_H, rx: 5 });
    const name = svg('text', { x: x + 8, y: y + 17 });
    name.textContent = clip(`${n.index} · ${n.task}`, 24);
    const state = svg('text', { class: 'sub', x: x + 8, y: y + 33 });
    state.textContent = n.state;
    group.append(title, rect, name, state);
    link.append(group);
    target.append(link);
  }
}

async function showWorkflow(id) {
  view.workflowId = id;
  let w;
  try {
    w = await api(`/v1/workflows/${encodeURIComponent(id)}`);
  } catch (e) {
    $('#workflow-detail').hidden = true;
    toast(`workflow ${id}: ${e.message}`, true);
    return;
  }
  if (view.workflowId !== id) return;
  const nodes = w.nodes || [];
  // Refreshed by the loop until nothing in it can change any more.
  view.workflowSettled = w.state !== 'running' && nodes.every((n) => !['waiting', 'queued'].includes(n.state));
  $('#workflow-title').replaceChildren(`Workflow ${w.name ? `“${w.name}” ` : ''}`, el('code', {}, w.id), ' ', stateBadge(w.state));
  $('#workflow-summary').textContent = `${nodes.length} node${nodes.length === 1 ? '' : 's'} (${nodeCounts(w.counts)}); ` +
    `on failure: ${w.on_failure}; created ${ago(w.created_at_ms)}` +
    (w.finished_at_ms ? `, over after ${duration(w.finished_at_ms - w.created_at_ms)}` : '');
  const dag = $('#workflow-dag');
  if (nodes.length > MAX_DRAWN_NODES) {
    dag.replaceChildren();
    dag.setAttribute('width', '0');
    dag.setAttribute('height', '0');
    $('#workflow-summary').textContent += ` — too many to draw (over ${MAX_DRAWN_NODES})`;
  } else {
    drawDag(dag, nodes);
  }
  const detail = $('#workflow-detail');
  detail.dataset.workflow = w.id;
  detail.dataset.state = w.state;
  detail.hidden = false;
  for (const row of document.querySelectorAll('#workflows tr[data-workflow]')) {
    row.classList.toggle('selected', row.dataset.workflow === w.id);
  }
}

// ---------------------------------------------------------------- dead letters

async function refreshDead() {
  const queue = view.deadQueue;
  if (!queue) return;
  const page = await api(`/v1/queues/${encodeURIComponent(queue)}/dead?limit=50`);
  if (queue !== view.deadQueue) return; // the selection changed meanwhile
  $('#dead-total').textContent = `${page.total} dead in ${queue}${page.total > page.jobs.length ? `, newest ${page.jobs.length} shown` : ''}`;
  const body = $('#dead tbody');
  if (!page.jobs.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'no dead letters')));
    return;
  }
  body.replaceChildren(...page.jobs.map((j) => el('tr', { 'data-dead': j.id },
    el('td', {}, jobLink(j.id)),
    el('td', { class: 'wrap' }, j.error || ''),
    el('td', {}, `${j.attempts}/${j.max_attempts}`),
    el('td', {}, ago(j.finished_at_ms)),
    el('td', {},
      el('button', { type: 'button', 'data-action': 'retry', 'data-id': j.id }, 'Retry'), ' ',
      el('button', { type: 'button', class: 'danger', 'data-action': 'purge', 'data-id': j.id }, 'Purge')))));
}

async function deadAction(action, selection) {
  const queue = view.deadQueue;
  try {
    const r = await api(`/v1/queues/${encodeURIComponent(queue)}/dead/${action}`, { method: 'POST', body: selection });
    toast(`${action === 'retry' ? 'retried' : 'purged'} ${r.count} dead job${r.count === 1 ? '' : 's'} of ${queue}`);
  } catch (e) {
    toast(`${action} failed: ${e.message}`, true);
  }
  await Promise.allSettled([refreshDead(), refreshQueues()]);
}

// ---------------------------------------------------------------- jobs

/**
 * A progress report as a bar with its message, when it has the standard
 * shape's `fraction` (`{"fraction": 0..1, "message": "..."}`, from
 * `ctx.report`); null otherwise.
 */
function progressBar(progress) {
  if (!progress || typeof progress.fraction !== 'number' || !Number.isFinite(progress.fraction)) return null;
  const f = Math.min(1, Math.max(0, progress.fraction));
  const message = typeof progress.message === 'string' ? progress.message : '';
  return el('span', { class: 'progress', 'data-progress': String(f), title: message },
    el('progress', { max: '1', value: String(f) }), el('span', { class: 'pct' }, `${Math.round(f * 100)}%`),
    message ? el('span', { class: 'progress-message' }, message) : '');
}

async function refreshJobs() {
  const params = new URLSearchParams({ limit: '25' });
  const queue = $('#jobs-queue').value;
  const state = $('#jobs-state').value;
  if (queue) params.set('queue', queue);
  if (state) params.set('state', state);
  const { jobs } = await api(`/v1/jobs?${params}`);
  const body = $('#jobs tbody');
  if (!jobs.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'no jobs')));
    return;
  }
  body.replaceChildren(...jobs.map((j) => el('tr', { 'data-job-row': j.id },
    el('td', {}, jobLink(j.id)), el('td', {}, j.kind),
    el('td', {}, stateBadge(j.state), (j.state === 'running' && progressBar(j.progress)) || ''),
    el('td', {}, `${j.attempts}/${j.max_attempts}`), el('td', {}, ago(j.enqueued_at_ms)),
    el('td', {}, j.finished_at_ms ? duration(j.finished_at_ms - j.enqueued_at_ms) : '–'))));
}

// ---------------------------------------------------------------- job detail

function timeline(job) {
  const items = [el('li', {}, el('time', {}, clock(job.enqueued_at_ms)), `enqueued (${job.priority || 'normal'} priority)`)];
  let previous = 0;
  for (const a of job.history || []) {
    // Attempt numbers restart when a dead letter is retried (a fresh budget).
    if (a.attempt <= previous) items.push(el('li', { class: 'now' }, el('time', {}, ''), 'retried from the dead letters'));
    previous = a.attempt;
    const ok = a.outcome === 'succeeded';
    const text = `attempt ${a.attempt}${a.worker ? ` on ${a.worker}` : ''}: ${a.outcome}` +
      (a.started_at_ms ? ` after ${duration(a.finished_at_ms - a.started_at_ms)}` : '') +
      (a.error ? ` — ${a.error}` : '');
    items.push(el('li', { class: ok ? 'ok' : 'bad', 'data-attempt': a.attempt }, el('time', {}, clock(a.started_at_ms || a.finished_at_ms)), text));
  }
  if (job.state === 'running') {
    items.push(el('li', { class: 'now', 'data-attempt': job.attempts }, el('time', {}, clock(job.started_at_ms)),
      `attempt ${job.attempts}${job.worker ? ` on ${job.worker}` : ''}: running for ${duration(Date.now() - job.started_at_ms)}`));
  } else if ((job.state === 'scheduled' || job.state === 'retrying') && job.run_at_ms) {
    items.push(el('li', { class: 'now' }, el('time', {}, clock(job.run_at_ms)), `${job.state}: due ${clock(job.run_at_ms)}`));
  } else if (job.state === 'pending') {
    items.push(el('li', { class: 'now' }, el('time', {}, clock(Date.now())), 'waiting for a worker'));
  }
  if (job.finished_at_ms) {
    const ok = job.state === 'succeeded';
    items.push(el('li', { class: ok ? 'ok' : 'bad', 'data-final': job.state }, el('time', {}, clock(job.finished_at_ms)),
      `${job.state} (${duration(job.finished_at_ms - job.enqueued_at_ms)} after enqueue)`));
  }
  return items;
}

async function showJob(id) {
  view.jobId = id;
  $('#job-id').value = id;
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (e) {
    $('#job-detail').hidden = true;
    toast(`job ${id}: ${e.message}`, true);
    return;
  }
  if (view.jobId !== id) return;
  const facts = [
    ['id', job.id], ['queue', job.kind], ['state', stateBadge(job.state)],
    ['attempts', `${job.attempts} of ${job.max_attempts}`], ['worker', job.worker || '–'],
    ['request id', job.request_id || '–'], ['error', job.error || '–'],
  ];
  // The last report: a bar when it has a fraction, else as sent.
  if (job.progress !== undefined && job.progress !== null) {
    facts.splice(3, 0, ['progress', progressBar(job.progress) || el('code', {}, JSON.stringify(job.progress))]);
  }
  $('#job-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  $('#job-timeline').replaceChildren(...timeline(job));
  $('#job-args').textContent = JSON.stringify(job.args, null, 2);
  $('#job-result').textContent = job.result === null || job.result === undefined ? '–' : JSON.stringify(job.result, null, 2);
  $('#job-detail').hidden = false;
  $('#job-detail').dataset.job = job.id;
}

function fromHash() {
  const job = location.hash.match(/^#job=([0-9a-fA-F-]{36})$/);
  if (job) {
    showJob(job[1]);
    $('#job-section').scrollIntoView({ block: 'nearest' });
  }
  const workflow = location.hash.match(/^#workflow=([0-9a-fA-F-]{36})$/);
  if (workflow) {
    showWorkflow(workflow[1]);
    $('#workflows-section').scrollIntoView({ block: 'nearest' });
  }
}

// ---------------------------------------------------------------- loop

async function refreshHealth() {
  const badge = $('#health');
  try {
    const res = await fetch('/health/ready', { headers: { accept: 'application/json' } });
    badge.textContent = res.ok ? 'ready' : 'unready';
    badge.className = `badge ${res.ok ? 'ready' : 'unready'}`;
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      badge.title = body ? JSON.stringify(body.components || body) : 'unready';
    }
  } catch {
    badge.textContent = 'API unreachable';
    badge.className = 'badge unready';
  }
}

async function tick() {
  const jobs = [refreshQueues(), refreshWorkers(), refreshSchedules(), refreshWorkflows(), refreshDead(), refreshJobs(), refreshHealth()];
  if (Date.now() - view.lastHistory > 15000) {
    view.lastHistory = Date.now();
    jobs.push(refreshHistory());
  }
  if (view.jobId && !$('#job-detail').hidden) jobs.push(showJob(view.jobId));
  if (view.workflowId && !view.workflowSettled && !$('#workflow-detail').hidden) jobs.push(showWorkflow(view.workflowId));
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === 'rejected');
  $('#updated').textContent = failed ? `update failed: ${failed.reason.message}` : `updated ${new Date().toLocaleTimeString()}`;
  setTimeout(tick, POLL_MS);
}

function start() {
  for (const s of STATES) $('#jobs-state').append(el('option', { value: s }, s));
  $('#dead-queue').addEventListener('change', (e) => { view.deadQueue = e.target.value; refreshDead(); });
  $('#jobs-queue').addEventListener('change', () => refreshJobs());
  $('#jobs-state').addEventListener('change', () => refreshJobs());
  $('#dead').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (!b) return;
    const { action, id } = b.dataset;
    if (action === 'purge' && !confirm(`Purge dead job ${id}? Redis forgets it; its Postgres record stays.`)) return;
    b.disabled = true;
    deadAction(action, { ids: [id] });
  });
  $('#dead-retry-all').addEventListener('click', () => deadAction('retry', { all: true }));
  $('#dead-purge-all').addEventListener('click', () => {
    if (confirm(`Purge every dead letter of ${view.deadQueue}?`)) deadAction('purge', { all: true });
  });
  $('#key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('#api-key').value.trim();
    if (key) sessionStorage.setItem('hopper-api-key', key);
    else sessionStorage.removeItem('hopper-api-key');
    $('#api-key').value = '';
    toast(key ? 'API key set for this tab' : 'API key cleared');
  });
  $('#job-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = $('#job-id').value.trim();
    if (id) location.hash = `job=${id}`;
  });
  window.addEventListener('hashchange', fromHash);
  fromHash();
  tick();
}

start();
