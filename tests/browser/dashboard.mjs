// Drives exported dashboard sites in headless Chromium, as a sales rep and a manager
// would, and checks what the pages show against the JSON files they read.
//
// Environment: BASE (the static server's URL of a folder of sites), FULL (an audience
// that sees every field: its site is checked against its files), SDR (an audience
// that may see no financials), SHOTS (where screenshots go), CHROMIUM (the browser).
// Prints one line per check; exits non-zero on the first failure.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const { BASE, FULL, SDR, SHOTS, CHROMIUM } = process.env;
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
const check = (ok, what) => {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
};

async function open(site, hash = '') {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(`${BASE}/${site}/${hash}`);
  return page;
}
const json = async (site, path) => {
  const res = await fetch(`${BASE}/${site}/${path}`);
  if (!res.ok) throw new Error(`${site}/${path}: HTTP ${res.status}`);
  return res.json();
};
const text = (page, sel) => page.$eval(sel, (el) => el.textContent.trim());
const rowCount = (page) => page.$$eval('.grid-row', (rows) => rows.length);

try {
  // ---------- a site with every field ----------
  const pointer = await json(FULL, 'current.json');
  const base = `versions/${pointer.version}`;
  const manifest = await json(FULL, `${base}/manifest.json`);
  const heat = await json(FULL, `${base}/heatmap.json`);
  const stats = await json(FULL, `${base}/stats.json`);
  const index = await json(FULL, `${base}/targets-index.json`);
  const rows = [];
  for (const shard of index.shards) rows.push(...(await json(FULL, `${base}/${shard.file}`)));
  check(rows.length === index.rows && rows.length === manifest.accounts, `the list holds all ${rows.length} accounts`);

  let page = await open(FULL);
  await page.waitForSelector('#heatmap');
  check((await text(page, '[data-fact="targets"]')) === String(stats.targets), 'the overview counts the targets of stats.json');
  await page.screenshot({ path: `${SHOTS}/overview.png` });

  // A heatmap click filters the list to that tier and vertical.
  const cell = heat.filter((c) => c.vertical !== '(unknown)').sort((a, b) => b.count - a.count)[0];
  await page.click(`#heatmap button[data-tier="${cell.tier_name}"][data-vertical="${cell.vertical}"]`);
  await page.waitForSelector('.grid-row');
  check((await text(page, '#count')).startsWith(`${cell.count} of`), `the ${cell.tier_name} × ${cell.vertical} cell lists its ${cell.count} targets`);
  const shown = await page.$$eval('.grid-row', (els) => els.map((e) => [e.querySelector('[data-col=icp_tier_name]').textContent, e.querySelector('[data-col=vertical]').textContent]));
  check(shown.length === Math.min(cell.count, shown.length) && shown.every(([t, v]) => t === cell.tier_name && v === cell.vertical), 'every listed row is of that tier and vertical');
  await page.screenshot({ path: `${SHOTS}/list-filtered.png` });

  // The whole list renders only the rows in view, and scrolls to the last one.
  await page.goto(`${BASE}/${FULL}/#/targets`);
  await page.waitForSelector('.grid-row');
  const inDom = await rowCount(page);
  check(inDom < rows.length && inDom <= 60, `only ${inDom} of ${rows.length} rows are in the DOM`);
  await page.$eval('#grid-body', (b) => { b.scrollTop = b.scrollHeight; b.dispatchEvent(new Event('scroll')); });
  const sorted = rows.slice().sort((a, b) => b.icp_score - a.icp_score || (a.domain < b.domain ? -1 : 1));
  await page.waitForSelector(`.grid-row[data-domain="${sorted[sorted.length - 1].domain}"]`);
  check(true, 'scrolled to the bottom, the last row is the lowest-scored target');

  // Search and filters narrow it; a click on a header sorts by that column.
  const probe = sorted[Math.floor(sorted.length / 2)].domain.slice(0, 5);
  await page.fill('#filter-q', probe);
  const searched = await page.$$eval('.grid-row', (els) => els.map((e) => e.dataset.domain));
  const expected = rows.filter((r) => r.domain.includes(probe) || (r.company_name || '').toLowerCase().includes(probe));
  check(searched.length === Math.min(expected.length, searched.length) && searched.length > 0 && (await text(page, '#count')).startsWith(`${expected.length} of`), `searching "${probe}" lists ${expected.length} targets`);
  await page.fill('#filter-q', '');
  const vendor = rows.find((r) => r.current_search)?.current_search;
  await page.selectOption('#filter-current_search', vendor);
  const byVendor = rows.filter((r) => r.current_search === vendor).length;
  check((await text(page, '#count')).startsWith(`${byVendor} of`), `the search-vendor filter (${vendor}) lists ${byVendor}`);
  await page.selectOption('#filter-current_search', '');
  await page.click('[data-sort="domain"]');
  await page.click('[data-sort="domain"]');
  const firstDomain = await page.$eval('.grid-row', (e) => e.dataset.domain);
  const last = rows.map((r) => r.domain).sort((a, b) => a.localeCompare(b)).pop();
  check(firstDomain === last, 'a second click on Domain sorts it descending');

  // The CSV download holds the filtered list.
  await page.selectOption('#filter-tier', 'hot');
  const hot = rows.filter((r) => r.icp_tier_name === 'hot').length;
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-csv')]);
  const csvPath = `${SHOTS}/targets.csv`;
  await download.saveAs(csvPath);
  const csv = (await import('node:fs')).readFileSync(csvPath, 'utf8').trim().split(/\r?\n/);
  check(csv.length === hot + 1 && csv[0].split(',').includes('domain'), `the CSV holds the ${hot} hot targets and a header`);

  // A target page shows what its JSON holds, each fact with its source.
  const target = sorted[0];
  const detail = await json(FULL, `${base}/targets/${target.domain}.json`);
  await page.goto(`${BASE}/${FULL}/#/target/${target.domain}`);
  await page.waitForSelector('#target-title');
  check((await text(page, '[data-fact="icp_score"]')).startsWith(String(detail.target.icp_score)), `${target.domain}'s page shows score ${detail.target.icp_score}`);
  check((await text(page, '[data-fact="company_name"]')) === (detail.target.company_name || ''), 'and its company name');
  check((await text(page, '[data-fact="current_search"]')) === (detail.target.current_search || 'none detected'), 'and its search vendor');
  const provenance = await page.$$eval('#tabpanel .prov', (els) => els.map((e) => e.textContent));
  check(provenance.some((p) => p.startsWith('builtwith')) && provenance.some((p) => p.startsWith('similarweb')), 'facts name their source and age');
  await page.screenshot({ path: `${SHOTS}/target.png`, fullPage: true });
  await page.click('#tab-tech');
  await page.waitForSelector('#tab-tech[aria-selected="true"]');
  const techRows = await page.$$eval('#tabpanel tbody tr', (r) => r.length);
  check(techRows === detail.tech_stack.length, `the tech stack tab lists its ${detail.tech_stack.length} technologies`);
  await page.focus('#tab-tech');
  await page.keyboard.press('ArrowRight');
  await page.waitForSelector('#tab-traffic[aria-selected="true"]');
  check(true, 'the arrow keys move between tabs');
  await page.click('#tab-financials');
  await page.waitForSelector('#tab-financials[aria-selected="true"]');
  const revenueShown = await text(page, '[data-fact="revenue"]');
  check((detail.financials && detail.financials.revenue != null) ? revenueShown.startsWith('$') : true, 'the financials tab shows the revenue');
  for (const tab of ['people', 'hiring', 'changes']) {
    await page.click(`#tab-${tab}`);
    await page.waitForSelector(`#tab-${tab}[aria-selected="true"]`);
  }
  check(true, 'every tab opens');
  await page.click('#tab-why');
  await page.waitForSelector('#tab-why[aria-selected="true"]');
  check((await text(page, '[data-fact="displacement_angle"]')) === detail.target.displacement_angle, 'the why-now tab shows the displacement angle');
  check((await text(page, '[data-fact="priority"]')).startsWith(detail.target.priority), `and the priority ${detail.target.priority}`);
  for (const name of ['budget', 'pain', 'timing']) {
    check((await text(page, `[data-fact="${name}_signal"]`)).startsWith(detail.target[`${name}_signal`]), `and the ${name} signal`);
  }
  const studies = await page.$$eval('#case-studies tbody tr', (r) => r.length);
  check(studies === detail.target.case_studies.length && studies === 3, 'and its three case studies');
  await page.screenshot({ path: `${SHOTS}/why-now.png`, fullPage: true });

  // The feeds and the spend.
  await page.goto(`${BASE}/${FULL}/#/changes`);
  await page.waitForSelector('#filter-min');
  const changes = await json(FULL, `${base}/changes.json`);
  check((await page.$$eval('.feed li', (l) => l.length)) === changes.length || changes.length === 0, `the change feed lists ${changes.length} changes`);
  await page.screenshot({ path: `${SHOTS}/changes.png` });
  await page.goto(`${BASE}/${FULL}/#/alerts`);
  await page.waitForSelector('#filter-person');
  await page.goto(`${BASE}/${FULL}/#/spend`);
  await page.waitForSelector('#spend');
  check(!(await page.$eval('[data-nav="spend"]', (a) => a.hidden)), 'the spend view is there for this audience');

  // A missing file says so.
  await page.goto(`${BASE}/${FULL}/#/target/not-a-target.example`);
  await page.waitForSelector('#state.error');
  check((await text(page, '#state')).includes('targets/not-a-target.example.json is missing'), 'a missing file is named');

  // Keyboard: from the search box, Tab reaches the rows and Enter opens one.
  await page.goto(`${BASE}/${FULL}/#/targets`);
  await page.waitForSelector('.grid-row');
  await page.focus('#filter-q');
  let focused = '';
  for (let i = 0; i < 40 && !focused; i++) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement?.dataset?.domain || '');
  }
  check(!!focused, 'Tab reaches the list rows');
  await page.keyboard.press('ArrowDown');
  const next = await page.evaluate(() => document.activeElement?.dataset?.domain || '');
  check(next && next !== focused, 'ArrowDown moves to the next row');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#target-title');
  check((await text(page, '#target-title')).includes(next), 'Enter opens the focused target');

  // Tablet width: nothing overflows sideways.
  await page.setViewportSize({ width: 820, height: 1180 });
  await page.goto(`${BASE}/${FULL}/#/targets`);
  await page.waitForSelector('.grid-row');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 1, `at tablet width the page does not scroll sideways (${overflow}px)`);
  await page.screenshot({ path: `${SHOTS}/tablet.png` });
  check(page.errors.length === 0, `no script errors (${page.errors.join('; ')})`);
  await page.close();

  // ---------- an SDR's site: no financials anywhere ----------
  page = await open(SDR, '#/targets');
  await page.waitForSelector('.grid-row');
  const headers = await page.$$eval('[data-sort]', (b) => b.map((x) => x.textContent));
  check(!headers.includes('Revenue'), 'the SDR list has no Revenue column');
  const sdrFirst = await page.$eval('.grid-row', (e) => e.dataset.domain);
  await page.goto(`${BASE}/${SDR}/#/target/${sdrFirst}`);
  await page.waitForSelector('#target-title');
  check(!(await page.$('#tab-financials')), 'the SDR target page has no Financials tab');
  for (const tab of ['overview', 'why', 'tech', 'traffic', 'people', 'hiring', 'changes']) {
    await page.click(`#tab-${tab}`);
    await page.waitForSelector(`#tab-${tab}[aria-selected="true"]`);
    const html = await page.content();
    for (const word of ['Revenue', 'revenue $', 'Gross margin', 'gross margin', 'Market cap', 'data-fact="revenue"', 'Share price']) {
      check(!html.includes(word), `the SDR's ${tab} tab has no "${word}"`);
    }
  }
  await page.screenshot({ path: `${SHOTS}/sdr-target.png`, fullPage: true });
  check(!(await page.$eval('[data-nav="spend"]', (a) => !a.hidden)), 'the SDR has no spend view');
  check(page.errors.length === 0, `no script errors on the SDR site (${page.errors.join('; ')})`);
  console.log('all dashboard checks passed');
} catch (e) {
  console.error(e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
