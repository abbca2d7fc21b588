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
    el('td', {}, jobLink(j.id)), el('td', {}, j.kind), el('td', {}, stateBadge(j.state)),
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
  $('#job-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  $('#job-timeline').replaceChildren(...timeline(job));
  $('#job-args').textContent = JSON.stringify(job.args, null, 2);
  $('#job-result').textContent = job.result === null || job.result === undefined ? '–' : JSON.stringify(job.result, null, 2);
  $('#job-detail').hidden = false;
  $('#job-detail').dataset.job = job.id;
}

function jobFromHash() {
  const m = location.hash.match(/^#job=([0-9a-fA-F-]{36})$/);
  if (m) {
    showJob(m[1]);
    $('#job-section').scrollIntoView({ block: 'nearest' });
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
  const jobs = [refreshQueues(), refreshWorkers(), refreshSchedules(), refreshDead(), refreshJobs(), refreshHealth()];
  if (Date.now() - view.lastHistory > 15000) {
    view.lastHistory = Date.now();
    jobs.push(refreshHistory());
  }
  if (view.jobId && !$('#job-detail').hidden) jobs.push(showJob(view.jobId));
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
  window.addEventListener('hashchange', jobFromHash);
  jobFromHash();
  tick();
}

start();
