// Drives Hopper's /dashboard in Debian's headless Chromium with playwright-core.
// Run by tests/tests/dashboard.rs against a live API and echo worker:
//   HOPPER_URL=http://127.0.0.1:PORT SCREENSHOT=path node dashboard.test.mjs
// It loads the page, sees a queue's depth change after jobs are submitted,
// finds the declared task `thumbnail` (declared by the Rust driver, one worker
// registered on it) with its worker count and depth, retries a dead job with
// the page's button, follows the job to its timeline, sees a schedule created
// through the API listed and then paused, draws two workflows' DAGs (node per task, state
// classes, edges; a cancel redrawn), and saves a screenshot. Any step that fails, any page error or console
// error (a CSP violation included) fails the run with exit 1.
import { chromium } from 'playwright-core';

const base = process.env.HOPPER_URL;
const screenshot = process.env.SCREENSHOT || 'dashboard.png';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!base) throw new Error('HOPPER_URL is not set');

const step = (what) => console.log(`[dashboard] ${what}`);

async function api(path, options = {}) {
  const res = await fetch(base + path, {
    method: options.method || 'GET',
    headers: { 'content-type': 'application/json' },
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
});
const problems = [];
let page;
try {
  page = await browser.newPage({ viewport: { width: 1400, height: 1800 } });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('dialog', (d) => d.accept());

  step('load /dashboard');
  const res = await page.goto(`${base}/dashboard`);
  if (res.status() !== 200) throw new Error(`/dashboard answered ${res.status()}`);
  const csp = res.headers()['content-security-policy'] || '';
  if (!csp.includes("script-src 'self'")) throw new Error(`no CSP on the page: ${csp}`);
  const pending = page.locator('#queues tr[data-queue="noop"] [data-field="pending"]');
  const before = Number(await pending.textContent());
  if (before !== 0) throw new Error(`noop pending is ${before} in a fresh namespace`);

  step('submit 25 noop jobs (no worker runs that queue) and watch the depth change');
  await api('/v1/jobs/noop/batch', { method: 'POST', body: Array.from({ length: 25 }, () => ({})) });
  await page.waitForFunction(() =>
    document.querySelector('#queues tr[data-queue="noop"] [data-field="pending"]').textContent === '25',
  null, { timeout: 15000 });
  await page.waitForFunction(() => {
    const legend = document.querySelector('[data-legend="noop"]');
    return legend && legend.textContent.endsWith(' 25');
  }, null, { timeout: 15000 });
  const line = await page.locator('#depth-chart polyline[data-series="noop"]').getAttribute('points');
  if (!line || line.split(' ').length < 2) throw new Error(`no depth line for noop: ${line}`);

  step('the declared task thumbnail is listed with its live worker');
  await api('/v1/jobs/thumbnail/batch', { method: 'POST', body: [{ size: 1 }, { size: 2 }] });
  await page.waitForFunction(() => {
    const row = document.querySelector('#queues tr[data-queue="thumbnail"]');
    return row && row.querySelector('[data-field="workers"]').textContent === '1'
      && row.querySelector('[data-field="pending"]').textContent === '2';
  }, null, { timeout: 15000 });
  await page.locator('#dead-queue option[value="thumbnail"]').waitFor({ state: 'attached', timeout: 10000 });
  await page.waitForFunction(() => {
    const legend = document.querySelector('[data-legend="thumbnail"]');
    return legend && legend.textContent.endsWith(' 2') && legend.querySelector('.swatch').style.backgroundColor !== '';
  }, null, { timeout: 15000 });

  step('make a dead job and retry it from the dead-letter table');
  const { id } = await api('/v1/jobs/echo?max_attempts=1', { method: 'POST', body: { message: 'from the dashboard test', fail: 'boom' } });
  await until('the job to die', async () => (await api(`/v1/jobs/${id}`)).state === 'dead');
  await page.selectOption('#dead-queue', 'echo');
  const retry = page.locator(`#dead button[data-action="retry"][data-id="${id}"]`);
  await retry.waitFor({ timeout: 15000 });
  await retry.click();
  await page.waitForFunction(() => document.querySelector('#toast').textContent.startsWith('retried 1 dead job'), null, { timeout: 10000 });
  // The retried job ran again (and failed again: its arguments say so).
  const rerun = await until('the retried job to run again', async () => {
    const job = await api(`/v1/jobs/${id}`);
    return job.history.length === 2 && job.state === 'dead' ? job : null;
  });
  if (rerun.history[1].outcome !== 'dead' || rerun.history[1].error !== 'boom') {
    throw new Error(`second run not recorded: ${JSON.stringify(rerun.history)}`);
  }

  step('open the job and read its timeline');
  await page.locator(`#dead a[data-job="${id}"]`).first().click();
  await page.waitForFunction((jobId) => {
    const d = document.querySelector('#job-detail');
    return d && !d.hidden && d.dataset.job === jobId && document.querySelectorAll('#job-timeline li[data-attempt]').length === 2;
  }, id, { timeout: 10000 });
  const timeline = await page.locator('#job-timeline').innerText();
  for (const want of ['enqueued', 'attempt 1', 'retried from the dead letters', 'boom', 'dead']) {
    if (!timeline.includes(want)) throw new Error(`timeline lacks "${want}":\n${timeline}`);
  }

  step('the jobs table lists the pending noop jobs');
  await page.selectOption('#jobs-queue', 'noop');
  await page.selectOption('#jobs-state', 'pending');
  await page.waitForFunction(() => document.querySelectorAll('#jobs tr[data-job-row]').length === 25, null, { timeout: 10000 });

  step('a schedule created through the API is listed with its timing and next fire, then paused');
  // Once a day at 04:30 in Paris: it fires no job during the test.
  await api('/v1/schedules', { method: 'POST', body: {
    id: 'nightly-report', task: 'echo', args: { message: 'nightly' }, cron: '30 4 * * *', timezone: 'Europe/Paris',
  } });
  await page.waitForFunction(() => {
    const row = document.querySelector('#schedules tr[data-schedule="nightly-report"]');
    return row && row.querySelector('[data-field="timing"]').textContent === '30 4 * * *'
      && row.querySelector('[data-field="timezone"]').textContent === 'Europe/Paris'
      && row.querySelector('[data-field="state"]').textContent === 'active'
      && row.querySelector('[data-field="next"] time') !== null;
  }, null, { timeout: 15000 });
  const next = await page.locator('#schedules tr[data-schedule="nightly-report"] [data-field="next"] time').getAttribute('datetime');
  const { next_fire_ms: nextFire } = await api('/v1/schedules/nightly-report');
  if (Date.parse(next) !== nextFire) throw new Error(`next fire shown ${next}, the API says ${nextFire}`);
  if (!next.endsWith(':30:00.000Z')) throw new Error(`04:30 in Paris is not half past a UTC hour: ${next}`);
  await api('/v1/schedules/nightly-report/pause', { method: 'POST', body: {} });
  await page.waitForFunction(() => {
    const row = document.querySelector('#schedules tr[data-schedule="nightly-report"]');
    return row && row.querySelector('[data-field="state"]').textContent === 'paused'
      && row.querySelector('[data-field="next"] time') === null;
  }, null, { timeout: 15000 });

  step('workflows: a chord is drawn as its DAG, node states and all, and a waiting chain follows its cancel');
  const echo = (message) => ({ task: 'echo', args: { message } });
  const fanIn = await api('/v1/workflows', { method: 'POST', body: {
    name: 'fan-in', root: { chord: { header: [echo('left'), echo('right')], body: echo('join') } },
  } });
  // No worker serves noop: its step stays queued and the next one waits for it.
  const stuck = await api('/v1/workflows', { method: 'POST', body: {
    name: '<b>stuck</b> & waiting', root: { chain: [{ task: 'noop', args: {} }, echo('after')] },
  } });
  await until('the chord to succeed', async () => (await api(`/v1/workflows/${fanIn.id}`)).state === 'succeeded');
  await page.waitForFunction((id) => {
    const row = document.querySelector(`#workflows tr[data-workflow="${id}"]`);
    return row && row.querySelector('[data-field="state"]').textContent === 'succeeded'
      && row.querySelector('[data-field="counts"]').textContent === 'succeeded 3';
  }, fanIn.id, { timeout: 15000 });
  // A name is text, never markup.
  const stuckName = page.locator(`#workflows tr[data-workflow="${stuck.id}"] [data-field="name"]`);
  if (await stuckName.textContent() !== '<b>stuck</b> & waiting') throw new Error(`name shown as ${await stuckName.innerHTML()}`);
  if (await page.locator('#workflows b').count() !== 0) throw new Error('a workflow name became markup');
  await page.locator(`#workflows a[data-workflow-link="${fanIn.id}"]`).click();
  const dag = async () => page.evaluate(() => [...document.querySelectorAll('#workflow-dag g[data-node]')].map((g) => ({
    index: Number(g.dataset.node), task: g.dataset.task, state: g.dataset.state,
    rect: g.querySelector('rect').getAttribute('class'), x: Number(g.querySelector('rect').getAttribute('x')),
    text: g.querySelector('text').textContent,
  })));
  await page.waitForFunction((id) => document.querySelector('#workflow-detail').dataset.workflow === id
    && document.querySelectorAll('#workflow-dag g[data-node]').length === 3, fanIn.id, { timeout: 10000 });
  const drawn = await dag();
  for (const n of drawn) {
    if (n.task !== 'echo' || n.state !== 'succeeded' || n.rect !== 'state-succeeded' || n.text !== `${n.index} · echo`) {
      throw new Error(`chord node drawn wrong: ${JSON.stringify(drawn)}`);
    }
  }
  const [left, right, join] = [0, 1, 2].map((i) => drawn.find((n) => n.index === i));
  if (!(left.x === right.x && join.x > left.x)) throw new Error(`the body is not right of its header: ${JSON.stringify(drawn)}`);
  const edges = await page.locator('#workflow-dag path.edge').evaluateAll((ps) => ps.map((p) => `${p.dataset.from}>${p.dataset.to}`).sort());
  if (edges.join(' ') !== '0>2 1>2') throw new Error(`edges: ${edges}`);

  await page.locator(`#workflows a[data-workflow-link="${stuck.id}"]`).click();
  await page.waitForFunction((id) => {
    const nodes = [...document.querySelectorAll('#workflow-dag g[data-node] rect')].map((r) => r.getAttribute('class'));
    return document.querySelector('#workflow-detail').dataset.workflow === id
      && nodes.join(' ') === 'state-queued state-waiting';
  }, stuck.id, { timeout: 10000 });
  const cancelled = await api(`/v1/workflows/${stuck.id}/cancel`, { method: 'POST', body: {} });
  if (cancelled.state_before !== 'running') throw new Error(`cancel answered ${JSON.stringify(cancelled)}`);
  // The drawing follows the running workflow on its own.
  await page.waitForFunction(() => {
    const nodes = [...document.querySelectorAll('#workflow-dag g[data-node] rect')].map((r) => r.getAttribute('class'));
    return document.querySelector('#workflow-detail').dataset.state === 'cancelled'
      && nodes.join(' ') === 'state-cancelled state-skipped';
  }, null, { timeout: 15000 });

  step('workers table shows the echo worker');
  await page.locator('#workers tr[data-worker] >> text=echo').first().waitFor({ timeout: 10000 });
  const health = await page.locator('#health').textContent();
  if (health !== 'ready') throw new Error(`health badge says ${health}`);

  if (problems.length) throw new Error(problems.join('\n'));
  step('ok');
} catch (e) {
  console.error(`[dashboard] FAILED: ${e.stack || e}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  if (page) {
    await page.screenshot({ path: screenshot, fullPage: true }).catch((e) => console.error(`screenshot: ${e}`));
    step(`screenshot: ${screenshot}`);
  }
  await browser.close();
}
