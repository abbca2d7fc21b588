// Drives Hopper's /dashboard in Debian's headless Chromium with playwright-core
// to see a running job's progress drawn. Run by tests/tests/job_events.rs
// against a live API and echo worker, with an echo job reporting progress
// (`progress_steps`) running:
//   HOPPER_URL=http://127.0.0.1:PORT JOB_ID=<id> node progress.test.mjs
// The jobs table shows a bar with the report's message in the running job's
// row, and the job's detail a `progress` fact with the same bar. Any step that
// fails, any page error or console error fails the run with exit 1.
import { chromium } from 'playwright-core';

const base = process.env.HOPPER_URL;
const id = process.env.JOB_ID;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!base || !id) throw new Error('HOPPER_URL and JOB_ID must be set');

const step = (what) => console.log(`[progress] ${what}`);

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1400 } });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });

  step('load /dashboard');
  const res = await page.goto(`${base}/dashboard`);
  if (res.status() !== 200) throw new Error(`/dashboard answered ${res.status()}`);

  step('the running job has a bar and its message in the jobs table');
  const row = await page.waitForFunction((job) => {
    const bar = document.querySelector(`#jobs tr[data-job-row="${job}"] .progress`);
    if (!bar) return null;
    const value = Number(bar.dataset.progress);
    const meter = bar.querySelector('progress');
    const message = bar.querySelector('.progress-message')?.textContent;
    return { value, meter: meter && Number(meter.value), message, text: bar.textContent };
  }, id, { timeout: 20000 }).then((h) => h.jsonValue());
  if (!(row.value > 0 && row.value <= 1) || row.meter !== row.value || !/^step [12]$/.test(row.message)
    || !row.text.includes(`${Math.round(row.value * 100)}%`)) {
    throw new Error(`the jobs table shows ${JSON.stringify(row)}`);
  }

  step('the job detail shows its progress');
  await page.goto(`${base}/dashboard#job=${id}`);
  const fact = await page.waitForFunction(() => {
    const dts = [...document.querySelectorAll('#job-facts dt')];
    const dt = dts.find((d) => d.textContent === 'progress');
    const bar = dt && dt.nextElementSibling.querySelector('.progress');
    return bar ? { value: Number(bar.dataset.progress), message: bar.querySelector('.progress-message')?.textContent } : null;
  }, null, { timeout: 20000 }).then((h) => h.jsonValue());
  if (!(fact.value > 0) || !/^step [12]$/.test(fact.message)) {
    throw new Error(`the job's facts show ${JSON.stringify(fact)}`);
  }

  if (problems.length) throw new Error(problems.join('\n'));
  step('ok');
} catch (e) {
  console.error(`[progress] FAILED: ${e.stack || e}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
