// PartnerForge dashboard: a static page over the files `partnerforge export` writes.
// It reads current.json (the published version), that version's manifest.json, then
// the files it lists — nothing else, no server beyond a static file host.
'use strict';

const ROW_HEIGHT = 36;
const TIERS = ['hot', 'warm', 'cool', 'cold'];
const SIGNALS = {
  vendor_change: 'search vendor change', trigger_event: 'trigger event', executive_change: 'executive change',
  search_hiring: 'hiring for search', traffic_growth: 'traffic growth', no_search: 'no search vendor',
};
const COLUMNS = [
  { key: 'domain', label: 'Domain', width: '1.6fr' },
  { key: 'company_name', label: 'Company', width: '1.6fr' },
  { key: 'icp_tier_name', label: 'Tier', width: '70px', sortKey: 'icp_tier' },
  { key: 'icp_score', label: 'Score', width: '64px', num: true },
  { key: 'priority', label: 'Priority', width: '70px' },
  { key: 'vertical', label: 'Vertical', width: '1fr' },
  { key: 'country', label: 'Country', width: '70px', narrow: true },
  { key: 'partner_tech', label: 'Partner tech', width: '1.3fr' },
  { key: 'current_search', label: 'Search vendor', width: '1.1fr' },
  { key: 'sw_monthly_visits', label: 'Visits/mo', width: '90px', num: true, fmt: 'count', narrow: true },
  { key: 'tech_spend', label: 'Tech spend', width: '90px', num: true, fmt: 'money', narrow: true },
  { key: 'revenue', label: 'Revenue', width: '90px', num: true, fmt: 'money', financial: true, narrow: true },
  { key: 'signals', label: 'Signals', width: '1.2fr', list: true },
];

const state = {
  pointer: null, manifest: null, base: '', files: new Set(),
  index: null, rows: null, stats: null, heatmap: null, changes: null, spend: null,
  alerts: new Map(), details: new Map(), loadingList: null,
  filters: {}, sort: { key: 'icp_score', dir: -1 }, filtered: [],
};

// ---------- small helpers ----------
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const view = () => $('#view');

class MissingFile extends Error {
  constructor(path, status) { super(`${path} is missing from this site (HTTP ${status})`); this.path = path; }
}

async function fetchJSON(path, opts = {}) {
  const res = await fetch(path, { cache: opts.cache || 'no-cache' });
  if (!res.ok) throw new MissingFile(path, res.status);
  return res.json();
}
const getFile = (path) => fetchJSON(state.base + path, { cache: 'force-cache' });

function setState(text, isError = false) {
  const el = $('#state');
  el.textContent = text || '';
  el.classList.toggle('error', !!isError);
}

function parseTime(t) {
  if (t == null) return null;
  // DuckDB writes "2026-11-23 02:30:00.123+00"; make it ISO 8601.
  let s = String(t).replace(' ', 'T');
  if (/[+-]\d\d$/.test(s)) s += ':00';
  const d = new Date(s);
  return isNaN(d) ? null : d;
}

function age(t) {
  const d = parseTime(t);
  if (!d) return '';
  const days = Math.floor((Date.now() - d.getTime()) / 86400000);
  if (days < 1) return 'today';
  if (days < 60) return `${days} d ago`;
  return `${Math.round(days / 30)} mo ago`;
}

function prov(source, fetchedAt) {
  if (!source && !fetchedAt) return '';
  const d = parseTime(fetchedAt);
  return `<span class="prov" title="${esc(d ? d.toISOString() : '')}">${esc(source || '')}${fetchedAt ? ' · ' + esc(age(fetchedAt)) : ''}</span>`;
}

function fmt(value, kind) {
  if (value == null || value === '') return '';
  if (kind === 'count') {
    const n = Number(value);
    if (n >= 1e9) return (n / 1e9).toFixed(1) + 'B';
    if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (n >= 1e3) return (n / 1e3).toFixed(1) + 'K';
    return String(Math.round(n));
  }
  if (kind === 'money') return '$' + fmt(value, 'count');
  if (kind === 'pct') return (Number(value) * (Math.abs(Number(value)) <= 1 ? 100 : 1)).toFixed(1) + ' %';
  if (kind === 'date') { const d = parseTime(value); return d ? d.toISOString().slice(0, 10) : String(value); }
  return String(value);
}

const tierBadge = (name) => name ? `<span class="tier ${esc(name)}">${esc(name)}</span>` : '';
const sigBadge = (s) => `<span class="sig ${esc(s)}">${esc(s)}</span>`;
const sees = (key) => !state.rows || !state.rows.length || key in state.rows[0];

// ---------- boot ----------
async function boot() {
  try {
    state.pointer = await fetchJSON('current.json', { cache: 'no-store' });
  } catch (e) {
    setState('Nothing is published here yet: current.json is missing. Run `partnerforge export --out <this folder>`.', true);
    return;
  }
  state.base = `versions/${state.pointer.version}/`;
  try {
    state.manifest = await getFile('manifest.json');
  } catch (e) {
    setState(`The published version ${state.pointer.version} has no manifest.json: re-run the export.`, true);
    return;
  }
  for (const f of state.manifest.files) state.files.add(f.path);
  const a = state.manifest.audience;
  $('#meta').textContent = `Snapshot ${state.manifest.snapshot_id} · published ${fmt(state.manifest.generated_at, 'date')}` +
    (a ? ` · ${a.name} (${a.role})` : ' · every account');
  if (state.files.has('spend.json')) $('[data-nav="spend"]').hidden = false;
  window.addEventListener('hashchange', route);
  route();
}

function has(path) { return state.files.has(path); }

async function need(key, path) {
  if (state[key]) return state[key];
  if (!has(path)) throw new MissingFile(path, 404);
  state[key] = await getFile(path);
  return state[key];
}

async function loadList() {
  if (state.rows) return state.rows;
  if (state.loadingList) return state.loadingList;
  state.loadingList = (async () => {
    const index = await need('index', 'targets-index.json');
    const rows = [];
    for (const shard of index.shards) {
      setState(`Loading targets… ${rows.length.toLocaleString()} of ${index.rows.toLocaleString()}`);
      const part = await getFile(shard.file);
      for (const r of part) rows.push(r);
    }
    setState('');
    state.rows = rows;
    return rows;
  })();
  return state.loadingList;
}

// ---------- routing ----------
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  return { parts, params };
}

async function route() {
  const { parts, params } = parseHash();
  const name = parts[0] || 'overview';
  document.querySelectorAll('[data-nav]').forEach((a) => {
    if (a.dataset.nav === name || (name === 'target' && a.dataset.nav === 'targets')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  view().innerHTML = '';
  setState('Loading…');
  try {
    if (name === 'overview') await renderOverview();
    else if (name === 'targets') await renderTargets(params);
    else if (name === 'target') await renderTarget(parts[1], parts[2] || 'overview');
    else if (name === 'changes') await renderChanges(params);
    else if (name === 'alerts') await renderAlerts(parts[1]);
    else if (name === 'spend') await renderSpend();
    else throw new Error(`no view "${name}"`);
    if (!$('#state').classList.contains('error')) setState('');
  } catch (e) {
    setState(e instanceof MissingFile ? e.message : `Something went wrong: ${e.message}`, true);
  }
}

// ---------- overview ----------
async function renderOverview() {
  const [stats, heat] = await Promise.all([need('stats', 'stats.json'), need('heatmap', 'heatmap.json')]);
  const tiers = stats.by_tier || [];
  let html = `<h1>Displacement targets</h1><div class="cards">
    <div class="card"><b data-fact="targets">${esc(stats.targets)}</b><span>targets scored</span></div>
    <div class="card"><b>${esc(stats.avg_score ?? '')}</b><span>average ICP score</span></div>`;
  for (const t of tiers) html += `<div class="card"><b>${esc(t.count)}</b><span>${tierBadge(t.name)}</span></div>`;
  html += '</div>';
  const verticals = [...new Set(heat.map((c) => c.vertical))].sort();
  const names = TIERS.filter((t) => heat.some((c) => c.tier_name === t));
  const max = Math.max(1, ...heat.map((c) => c.count));
  if (!heat.length) {
    html += '<div class="panel empty">No targets in this site.</div>';
  } else {
    html += `<div class="panel"><h2>Tier × vertical</h2><div style="overflow-x:auto"><table class="heatmap" id="heatmap"><thead><tr><th scope="col">Tier</th>`;
    for (const v of verticals) html += `<th scope="col">${esc(v)}</th>`;
    html += '</tr></thead><tbody>';
    for (const t of names) {
      html += `<tr><th scope="row">${tierBadge(t)}</th>`;
      for (const v of verticals) {
        const cell = heat.find((c) => c.tier_name === t && c.vertical === v);
        const n = cell ? cell.count : 0;
        const alpha = n ? 0.12 + 0.7 * (n / max) : 0;
        html += `<td><button type="button" data-tier="${esc(t)}" data-vertical="${esc(v)}" style="background:rgba(58,75,216,${alpha.toFixed(2)})"
          aria-label="${esc(n)} ${esc(t)} targets in ${esc(v)}" ${n ? '' : 'disabled'}>${n || ''}</button></td>`;
      }
      html += '</tr>';
    }
    html += '</tbody></table></div><p class="prov">Click a cell to list its targets.</p></div>';
  }
  view().innerHTML = html;
  view().querySelectorAll('#heatmap button[data-tier]').forEach((b) => b.addEventListener('click', () => {
    const vertical = b.dataset.vertical === '(unknown)' ? '' : b.dataset.vertical;
    location.hash = `#/targets?tier=${encodeURIComponent(b.dataset.tier)}&vertical=${encodeURIComponent(vertical)}`;
  }));
}

// ---------- targets list ----------
// Narrow screens (tablets) drop the secondary columns; financial ones only show when the data has them.
const narrow = window.matchMedia('(max-width: 900px)');
function visibleColumns() {
  return COLUMNS.filter((c) => (!c.financial || sees(c.key)) && !(c.narrow && narrow.matches));
}
narrow.addEventListener('change', () => { if ($('#grid')) { buildGrid(); drawGrid(false); } });

function applyFilters() {
  const f = state.filters;
  const q = (f.q || '').trim().toLowerCase();
  let rows = state.rows.filter((r) =>
    (!q || (r.domain || '').includes(q) || (r.company_name || '').toLowerCase().includes(q)) &&
    (!f.tier || r.icp_tier_name === f.tier) &&
    (!f.vertical || r.vertical === f.vertical) &&
    (!f.country || r.country === f.country) &&
    (!f.partner_tech || r.partner_tech === f.partner_tech) &&
    (!f.current_search || (f.current_search === '(none)' ? !r.current_search : r.current_search === f.current_search)) &&
    (!f.signal || (r.signals || []).includes(f.signal)));
  const col = COLUMNS.find((c) => c.key === state.sort.key) || COLUMNS[3];
  const key = col.sortKey || col.key;
  const dir = state.sort.dir;
  rows = rows.slice().sort((a, b) => {
    let x = a[key], y = b[key];
    if (Array.isArray(x)) x = x.join(','); if (Array.isArray(y)) y = y.join(',');
    if (x == null && y == null) return a.domain < b.domain ? -1 : 1;
    if (x == null) return 1; if (y == null) return -1;
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return c * dir || (a.domain < b.domain ? -1 : 1);
  });
  state.filtered = rows;
}

function cell(row, col) {
  const v = row[col.key];
  if (col.key === 'icp_tier_name') return tierBadge(v);
  if (col.list) return (v || []).map((s) => `<span class="tag">${esc(SIGNALS[s] || s)}</span>`).join('');
  return esc(col.fmt ? fmt(v, col.fmt) : v);
}

async function renderTargets(params) {
  const rows = await loadList();
  const index = state.index;
  const f = state.filters = {};
  for (const k of ['q', 'tier', 'vertical', 'country', 'partner_tech', 'current_search', 'signal']) {
    if (params.get(k)) f[k] = params.get(k);
  }
  const options = (key, values, label) => `<label>${label}<select id="filter-${key}" data-filter="${key}">
      <option value="">any</option>${values.map((v) => `<option${f[key] === v ? ' selected' : ''} value="${esc(v)}">${esc(SIGNALS[v] || v)}</option>`).join('')}</select></label>`;
  const facets = index.facets || {};
  view().innerHTML = `<h1>Targets</h1>
    <div class="filters" role="search">
      <label>Search<input type="search" id="filter-q" data-filter="q" placeholder="domain or company" value="${esc(f.q || '')}"></label>
      ${options('tier', TIERS.filter((t) => (facets.tier || []).includes(t)), 'Tier')}
      ${options('vertical', facets.vertical || [], 'Vertical')}
      ${options('country', facets.country || [], 'Country')}
      ${options('partner_tech', facets.partner_tech || [], 'Partner tech')}
      ${options('current_search', ['(none)', ...(facets.current_search || [])], 'Search vendor')}
      ${options('signal', Object.keys(SIGNALS), 'Signal')}
      <button type="button" class="action" id="download-csv">Download CSV</button>
      <span class="count" id="count" aria-live="polite"></span>
    </div>
    <div class="grid" id="grid"></div>`;
  const sync = () => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(state.filters)) if (v) p.set(k, v);
    history.replaceState(null, '', `#/targets${p.toString() ? '?' + p : ''}`);
    applyFilters();
    drawGrid(true);
  };
  view().querySelectorAll('[data-filter]').forEach((el) => el.addEventListener(el.tagName === 'INPUT' ? 'input' : 'change', () => {
    state.filters[el.dataset.filter] = el.value;
    sync();
  }));
  $('#download-csv').addEventListener('click', downloadCsv);
  buildGrid();
  applyFilters();
  drawGrid(true);
  if (!rows.length) $('#grid').innerHTML = '<div class="empty">No targets in this site.</div>';
}

function buildGrid() {
  const cols = visibleColumns();
  const template = cols.map((c) => c.width).join(' ');
  const grid = $('#grid');
  grid.innerHTML = `<div class="grid-head" role="row" style="grid-template-columns:${template}">${cols.map((c) =>
    `<button type="button" role="columnheader" data-sort="${c.key}" class="${c.num ? 'num' : ''} ">${esc(c.label)}</button>`).join('')}</div>
    <div class="grid-body" id="grid-body" tabindex="-1"><div class="grid-spacer" id="grid-spacer"></div></div>`;
  grid.querySelectorAll('[data-sort]').forEach((b) => b.addEventListener('click', () => {
    const key = b.dataset.sort;
    state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: COLUMNS.find((c) => c.key === key).num ? -1 : 1 };
    applyFilters();
    drawGrid(true);
  }));
  const body = $('#grid-body');
  body.addEventListener('scroll', () => drawGrid(false));
  body.addEventListener('keydown', (e) => {
    const row = e.target.closest('.grid-row');
    if (!row || (e.key !== 'ArrowDown' && e.key !== 'ArrowUp')) return;
    e.preventDefault();
    const next = Number(row.dataset.index) + (e.key === 'ArrowDown' ? 1 : -1);
    if (next < 0 || next >= state.filtered.length) return;
    if (next * ROW_HEIGHT < body.scrollTop || (next + 1) * ROW_HEIGHT > body.scrollTop + body.clientHeight) {
      body.scrollTop = Math.max(0, next * ROW_HEIGHT - body.clientHeight / 2);
      drawGrid(false);
    }
    const el = body.querySelector(`.grid-row[data-index="${next}"]`);
    if (el) el.focus();
  });
}

// Only the rows in view (and a few around them) are in the DOM.
function drawGrid(reset) {
  const body = $('#grid-body');
  if (!body) return;
  const cols = visibleColumns();
  const template = cols.map((c) => c.width).join(' ');
  const rows = state.filtered;
  if (reset) body.scrollTop = 0;
  $('#grid-spacer').style.height = `${rows.length * ROW_HEIGHT}px`;
  const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - 10);
  const last = Math.min(rows.length, first + Math.ceil((body.clientHeight || 600) / ROW_HEIGHT) + 20);
  let html = '';
  for (let i = first; i < last; i++) {
    const r = rows[i];
    html += `<a class="grid-row" role="row" href="#/target/${encodeURIComponent(r.domain)}" data-index="${i}" data-domain="${esc(r.domain)}"
      style="top:${i * ROW_HEIGHT}px;grid-template-columns:${template}">${cols.map((c) =>
      `<span class="${c.num ? 'num' : ''} " data-col="${c.key}">${cell(r, c)}</span>`).join('')}</a>`;
  }
  $('#grid-spacer').innerHTML = html;
  document.querySelectorAll('[data-sort]').forEach((b) => {
    if (b.dataset.sort === state.sort.key) b.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
    else b.removeAttribute('aria-sort');
  });
  const total = state.rows.length;
  $('#count').textContent = rows.length === total ? `${total.toLocaleString()} targets` : `${rows.length.toLocaleString()} of ${total.toLocaleString()} targets`;
  if (!rows.length && total) $('#grid-spacer').innerHTML = '<div class="empty">No target matches these filters.</div>';
}

function downloadCsv() {
  const rows = state.filtered;
  const keys = rows.length ? Object.keys(rows[0]).filter((k) => k !== 'rank' && k !== 'score_breakdown') : [];
  const quote = (v) => {
    if (v == null) return '';
    const s = Array.isArray(v) ? v.join('; ') : typeof v === 'object' ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const text = [keys.join(','), ...rows.map((r) => keys.map((k) => quote(r[k])).join(','))].join('\r\n') + '\r\n';
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = `targets-${state.manifest.snapshot_id}.csv`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---------- target page ----------
const TABS = [
  ['overview', 'Overview & score'], ['why', 'Why now'], ['tech', 'Tech stack'], ['traffic', 'Traffic'], ['financials', 'Financials'],
  ['people', 'Executives & quotes'], ['hiring', 'Hiring'], ['changes', 'Changes'],
];

async function renderTarget(domain, tab) {
  if (!domain) throw new Error('no target named');
  const path = `targets/${domain}.json`;
  let d = state.details.get(domain);
  if (!d) {
    if (!has(path)) throw new MissingFile(path, 404);
    d = await getFile(path);
    state.details.set(domain, d);
  }
  const t = d.target;
  const audience = state.manifest.audience;
  const tabs = TABS.filter(([id]) => id !== 'financials' || !audience || audience.sees_financials);
  if (!tabs.some(([id]) => id === tab)) tab = 'overview';
  view().innerHTML = `<p><a href="#/targets">← Targets</a></p>
    <h1 id="target-title">${esc(t.company_name || t.domain)} <span class="prov">${esc(t.domain)}</span> ${tierBadge(t.icp_tier_name)}</h1>
    <div class="tabs" role="tablist" aria-label="Target details">${tabs.map(([id, label]) =>
      `<button type="button" role="tab" id="tab-${id}" data-tab="${id}" aria-selected="${id === tab}" tabindex="${id === tab ? 0 : -1}" aria-controls="tabpanel">${esc(label)}</button>`).join('')}</div>
    <div class="panel" role="tabpanel" id="tabpanel" aria-labelledby="tab-${tab}">${TAB_VIEWS[tab](d)}</div>`;
  const buttons = [...view().querySelectorAll('[role=tab]')];
  buttons.forEach((b, i) => {
    b.addEventListener('click', () => { location.hash = `#/target/${encodeURIComponent(domain)}/${b.dataset.tab}`; });
    b.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
      const next = buttons[(i + (e.key === 'ArrowRight' ? 1 : buttons.length - 1)) % buttons.length];
      next.focus();
      next.click();
    });
  });
  const active = view().querySelector(`[role=tab][aria-selected=true]`);
  if (active && document.activeElement && document.activeElement.closest && document.activeElement.closest('.tabs')) active.focus();
}

const rowsOf = (items, head, render) => items && items.length
  ? `<table class="facts"><thead><tr>${head.map((h) => `<th scope="col">${esc(h)}</th>`).join('')}</tr></thead><tbody>${items.map(render).join('')}</tbody></table>`
  : '<div class="empty">Nothing known.</div>';

const fact = (label, value, source, fetchedAt, key) =>
  `<tr><th scope="row">${esc(label)}</th><td${key ? ` data-fact="${esc(key)}"` : ''}>${value === '' || value == null ? '<span class="prov">unknown</span>' : value}</td><td>${prov(source, fetchedAt)}</td></tr>`;

const TAB_VIEWS = {
  overview(d) {
    const t = d.target, c = d.company || {}, s = d.tech_spend || {}, tr = d.traffic || {};
    const b = t.score_breakdown || {};
    const model = `partnerforge (ICP model)`;
    let html = `<table class="facts">
      ${fact('ICP score', `<b>${esc(t.icp_score)}</b> ${tierBadge(t.icp_tier_name)}`, model, t.last_enriched, 'icp_score')}
      ${fact('Company', esc(t.company_name), c.source, c.fetched_at, 'company_name')}
      ${fact('Vertical', esc(t.vertical), c.source, c.fetched_at, 'vertical')}
      ${fact('Country', esc([t.city, t.state, t.country].filter(Boolean).join(', ')), c.source, c.fetched_at, 'country')}
      ${fact('Partner technology', esc(t.partner_tech), s.source, s.fetched_at, 'partner_tech')}
      ${fact('Search vendor', esc(t.current_search || 'none detected'), s.source, s.fetched_at, 'current_search')}
      ${fact('Monthly visits', esc(fmt(t.sw_monthly_visits, 'count')), tr.source, tr.fetched_at, 'sw_monthly_visits')}
      ${fact('Tech spend / year', esc(fmt(t.tech_spend, 'money')), s.source, s.fetched_at, 'tech_spend')}
      ${fact('Enrichment', esc(t.enrichment_level), model, t.last_enriched)}
    </table><h2 style="margin-top:14px">Score breakdown</h2><table class="facts breakdown">`;
    // Each component's points, and its share of the score.
    const total = Math.max(1, Object.values(b).reduce((a, v) => a + (v || 0), 0));
    for (const [k, v] of Object.entries(b)) {
      html += `<tr><th scope="row">${esc(k.replace('_', ' '))}</th><td class="num" data-fact="points-${esc(k)}">${esc(v)}</td>
        <td><span class="bar" style="width:${((100 * (v || 0)) / total).toFixed(0)}%" title="${((100 * (v || 0)) / total).toFixed(0)} % of the score"></span></td></tr>`;
    }
    html += '</table>';
    if ((t.score_reasons || []).length) html += `<ul>${t.score_reasons.map((r) => `<li>${esc(r)}</li>`).join('')}</ul>`;
    if ((d.competitors || []).length) {
      html += `<h2>Competitors</h2>` + rowsOf(d.competitors, ['Competitor', 'Similarity', 'Runs Algolia', 'Source'], (c) =>
        `<tr><td>${esc(c.competitor)}</td><td class="num">${esc(Number(c.score).toFixed(2))}</td><td>${c.uses_algolia ? 'yes' : ''}</td><td>${prov(c.source, c.fetched_at)}</td></tr>`);
    }
    return html;
  },
  why(d) {
    const t = d.target;
    if (!t.priority) return '<div class="empty">No signals: the pipeline has no signal rules.</div>';
    const rules = 'partnerforge (signal rules)';
    let html = `<p class="angle" data-fact="displacement_angle">${esc(t.displacement_angle)}</p><table class="facts">
      ${fact('Priority', `<b>${esc(t.priority)}</b> <span class="prov">(${esc(t.priority_points)} points: tier and signals)</span>`, rules, t.last_enriched, 'priority')}`;
    for (const name of ['budget', 'pain', 'timing']) {
      const level = t[`${name}_signal`];
      if (level == null) continue;
      const reasons = t[`${name}_reasons`];
      const dates = (t[`${name}_evidence_on`] || []).map((x) => fmt(x, 'date'));
      const body = `<span class="sig ${esc(level)}">${esc(level)}</span>` +
        (reasons ? `<ul>${reasons.map((r) => `<li>${esc(r)}</li>`).join('')}</ul>` : '') +
        (dates.length ? `<span class="prov">evidence dated ${esc(dates.join(', '))}</span>` : '');
      html += fact(name[0].toUpperCase() + name.slice(1), body, rules, t.last_enriched, `${name}_signal`);
    }
    html += '</table><h2 style="margin-top:14px">Case studies to mention</h2><div id="case-studies">';
    html += rowsOf(t.case_studies, ['Customer', 'Use case', 'Result', 'Why it matches'], (c) =>
      `<tr><td>${c.url ? `<a href="${esc(c.url)}" rel="noopener">${esc(c.customer)}</a>` : esc(c.customer)}<br><span class="prov">${esc([c.vertical, c.partner_tech, c.region, c.size_band].filter(Boolean).join(' · '))}</span></td>
        <td>${esc(c.use_case)}</td><td>${esc(c.headline_metric)}</td><td>${esc(c.reason)}</td></tr>`);
    html += '</div>';
    if ((t.conflicts || []).length) {
      html += '<h2 style="margin-top:14px">Where sources disagree</h2><div id="conflicts">' +
        rowsOf(t.conflicts, ['Field', 'Shown', 'Outweighed'], (c) =>
          `<tr><td>${esc(c.field.replace('_', ' '))}</td><td>${esc(c.value)} <span class="prov">${esc(c.source)}, weight ${esc(c.weight)}</span></td>
            <td>${esc(c.other_value)} <span class="prov">${prov(c.other_source, c.other_fetched_at)}, weight ${esc(c.other_weight)}</span></td></tr>`) + '</div>';
    }
    return html;
  },
  tech(d) {
    return rowsOf(d.tech_stack, ['Technology', 'Tag', 'Status', 'First detected', 'Last detected', 'Source'], (x) =>
      `<tr><td class="${x.live ? '' : 'dead'}">${esc(x.technology)}${x.is_search_vendor ? ' <span class="tag">search</span>' : ''}${x.is_partner_tech ? ' <span class="tag">partner</span>' : ''}</td>
        <td>${esc(x.tag)}</td><td>${x.live ? 'live' : 'dead'}</td><td>${esc(fmt(x.first_detected, 'date'))}</td><td>${esc(fmt(x.last_detected, 'date'))}</td><td>${prov(x.source, x.fetched_at)}</td></tr>`);
  },
  traffic(d) {
    const tr = d.traffic || {}, src = d.traffic_sources || {};
    let html = `<table class="facts">
      ${fact('Month', esc(tr.month), tr.source, tr.fetched_at)}
      ${fact('Monthly visits', esc(fmt(tr.monthly_visits, 'count')), tr.source, tr.fetched_at, 'monthly_visits')}
      ${fact('Growth month over month', esc(fmt(tr.visits_growth_mom, 'pct')), tr.source, tr.fetched_at)}
      ${fact('Bounce rate', esc(fmt(tr.bounce_rate, 'pct')), tr.source, tr.fetched_at)}
      ${fact('Pages per visit', esc(tr.pages_per_visit == null ? '' : Number(tr.pages_per_visit).toFixed(1)), tr.source, tr.fetched_at)}
      ${fact('Search share of traffic', esc(fmt(src.search_traffic_pct, 'pct')), src.source, src.fetched_at)}
    </table><h2 style="margin-top:14px">Trend by snapshot</h2>`;
    const max = Math.max(1, ...(d.traffic_trend || []).map((p) => p.monthly_visits || 0));
    html += rowsOf(d.traffic_trend, ['Snapshot', 'Visits', '', 'ICP score', 'Tier'], (p) =>
      `<tr><td>${esc(p.snapshot)}</td><td class="num">${esc(fmt(p.monthly_visits, 'count'))}</td>
        <td><span class="bar" style="width:${((100 * (p.monthly_visits || 0)) / max).toFixed(0)}%"></span></td><td class="num">${esc(p.icp_score)}</td><td>${tierBadge(p.tier)}</td></tr>`);
    return html;
  },
  financials(d) {
    const f = d.financials || {}, st = d.stock || {}, an = d.analysts || {};
    let html = `<table class="facts">
      ${fact('Ticker', esc(f.ticker || d.target.ticker), f.source, f.fetched_at)}
      ${fact('Revenue', esc(fmt(f.revenue, 'money')), f.source, f.fetched_at, 'revenue')}
      ${fact('Gross margin', esc(fmt(f.gross_margin, 'pct')), f.source, f.fetched_at, 'gross_margin')}
      ${fact('Revenue growth', esc(fmt(f.revenue_growth, 'pct')), f.source, f.fetched_at)}
      ${fact('Market cap', esc(fmt(f.market_cap ?? st.market_cap, 'money')), st.source || f.source, st.fetched_at || f.fetched_at, 'market_cap')}
      ${fact('Share price', esc(st.price == null ? '' : `${Number(st.price).toFixed(2)} ${st.currency || ''}`), st.source, st.fetched_at)}
      ${fact('Sector / industry', esc([f.sector, f.industry].filter(Boolean).join(' / ')), f.source, f.fetched_at)}
      ${fact('Analysts (mean)', esc(an.mean == null ? '' : Number(an.mean).toFixed(2)), an.source, an.fetched_at)}
    </table><h2 style="margin-top:14px">History</h2>`;
    html += rowsOf(d.financial_history, ['Fiscal year end', 'Revenue', 'Gross margin', 'Operating margin', 'Source'], (h) =>
      `<tr><td>${esc(h.fiscal_year_end)}</td><td class="num">${esc(fmt(h.revenue, 'money'))}</td><td class="num">${esc(fmt(h.gross_margin, 'pct'))}</td><td class="num">${esc(fmt(h.operating_margin, 'pct'))}</td><td>${prov(h.source, h.fetched_at)}</td></tr>`);
    return html;
  },
  people(d) {
    return '<h2>Executives</h2>' + rowsOf(d.executives, ['Name', 'Title', 'Role', 'Source'], (e) =>
      `<tr><td>${esc(e.name)}</td><td>${esc(e.title)}</td><td>${esc(e.role)}</td><td>${prov(e.source, e.fetched_at)}</td></tr>`) +
      '<h2 style="margin-top:14px">Quotes in the news</h2>' + rowsOf(d.quotes, ['Who', 'Quote', 'Published', 'Source'], (q) =>
      `<tr><td>${esc(q.name)}<br><span class="prov">${esc(q.title)}</span></td><td>“${esc(q.quote)}”${q.link ? ` <a href="${esc(q.link)}" rel="noopener">link</a>` : ''}</td><td>${esc(q.published)}</td><td>${prov(q.source, q.fetched_at)}</td></tr>`);
  },
  hiring(d) {
    return rowsOf(d.hiring, ['Board', 'Open roles', 'Search', 'E-commerce', 'Personalization', 'Leadership', 'Source'], (h) =>
      `<tr><td>${esc(h.platform)} / ${esc(h.board)}</td><td class="num">${esc(h.open_roles)}</td><td class="num">${esc(h.search_roles)}</td><td class="num">${esc(h.ecommerce_roles)}</td><td class="num">${esc(h.personalization_roles)}</td><td class="num">${esc(h.leadership_roles)}</td><td>${prov(h.source, h.fetched_at)}</td></tr>`) +
      '<h2 style="margin-top:14px">Postings that signal a project</h2>' +
      rowsOf((d.job_postings || []).filter((p) => p.signals), ['Posted', 'Title', 'Signals', 'Location', 'Source'], (p) =>
        `<tr><td>${esc(p.posted_at)}</td><td>${p.url ? `<a href="${esc(p.url)}" rel="noopener">${esc(p.title)}</a>` : esc(p.title)}</td><td>${esc(p.signals)}</td><td>${esc(p.location)}</td><td>${prov(p.source, p.fetched_at)}</td></tr>`) +
      '<h2 style="margin-top:14px">Trigger events</h2>' + rowsOf(d.trigger_events, ['Published', 'Event', 'Headline', 'Source'], (x) =>
        `<tr><td>${esc(x.published)}</td><td>${esc(x.event_type)}</td><td>${x.link ? `<a href="${esc(x.link)}" rel="noopener">${esc(x.headline)}</a>` : esc(x.headline)}</td><td>${prov(x.source, x.fetched_at)}</td></tr>`);
  },
  changes(d) {
    return rowsOf(d.changes, ['Snapshot', 'Significance', 'What changed', 'Evidence'], (c) =>
      `<tr><td>${esc(c.snapshot)}</td><td>${sigBadge(c.significance)}</td><td>${esc(c.summary)}</td><td>${prov(c.source, c.fetched_at)}<br><span class="prov">${esc(c.evidence)}</span></td></tr>`);
  },
};

// ---------- feeds ----------
function feedList(items, empty) {
  if (!items.length) return `<div class="empty">${esc(empty)}</div>`;
  return `<ul class="feed">${items.map((c) => `<li>${sigBadge(c.significance)} <a href="#/target/${encodeURIComponent(c.domain)}/changes">${esc(c.domain)}</a>
    — ${esc(c.summary)}<br><span class="prov">${esc(c.snapshot)} · ${esc(c.category)} · ${prov(c.source, c.fetched_at)}</span>
    ${c.algolia_relevance ? `<br><span>${esc(c.algolia_relevance)}</span>` : ''}</li>`).join('')}</ul>`;
}

async function renderChanges(params) {
  const changes = await need('changes', 'changes.json');
  const min = params.get('min') || 'low';
  const rank = { critical: 0, high: 1, medium: 2, low: 3 };
  const items = changes.filter((c) => rank[c.significance] <= rank[min]);
  view().innerHTML = `<h1>What changed</h1><div class="filters"><label>At least<select id="filter-min">${Object.keys(rank).map((s) =>
    `<option${s === min ? ' selected' : ''}>${s}</option>`).join('')}</select></label><span class="count">${items.length} changes, last 30 days</span></div>
    <div class="panel">${feedList(items, 'Nothing changed in the last 30 days.')}</div>`;
  $('#filter-min').addEventListener('change', (e) => { location.hash = `#/changes?min=${e.target.value}`; });
}

async function renderAlerts(person) {
  const people = [...state.files].filter((p) => p.startsWith('alerts/')).map((p) => p.slice(7, -5)).sort();
  const feeds = (state.manifest.audience && state.manifest.audience.feeds) || people;
  if (!person) person = feeds.find((p) => people.includes(p)) || people[0];
  let html = `<h1>Alerts</h1><div class="filters"><label>Feed of<select id="filter-person">${[...new Set([...feeds, ...people])].map((p) =>
    `<option${p === person ? ' selected' : ''} value="${esc(p)}">${esc(p)}</option>`).join('')}</select></label></div>`;
  let items = [];
  if (person && people.includes(person)) {
    if (!state.alerts.has(person)) state.alerts.set(person, await getFile(`alerts/${person}.json`));
    items = state.alerts.get(person);
  }
  html += `<div class="panel">${feedList(items, person ? `No alerts for ${person} in the last 30 days.` : 'No alert feeds in this site.')}</div>`;
  view().innerHTML = html;
  const select = $('#filter-person');
  if (select) select.addEventListener('change', (e) => { location.hash = `#/alerts/${encodeURIComponent(e.target.value)}`; });
}

async function renderSpend() {
  const spend = await need('spend', 'spend.json');
  const months = [...new Set(spend.map((s) => s.month))].sort();
  const providers = [...new Set(spend.map((s) => s.provider))].sort();
  const max = Math.max(1, ...months.map((m) => spend.filter((s) => s.month === m).reduce((a, s) => a + s.spend_usd, 0)));
  let html = `<h1>Spend by provider and month</h1><div class="panel" style="overflow-x:auto"><table class="facts" id="spend"><thead><tr><th scope="col">Month</th>${providers.map((p) =>
    `<th scope="col" class="num">${esc(p)}</th>`).join('')}<th scope="col" class="num">Total</th><th scope="col"></th></tr></thead><tbody>`;
  for (const m of months) {
    const total = spend.filter((s) => s.month === m).reduce((a, s) => a + s.spend_usd, 0);
    html += `<tr><th scope="row">${esc(m)}</th>${providers.map((p) => {
      const s = spend.find((x) => x.month === m && x.provider === p);
      return `<td class="num" title="${s ? `${s.calls} calls, ${s.failed} failed` : ''}">${s ? '$' + s.spend_usd.toFixed(2) : ''}</td>`;
    }).join('')}<td class="num"><b>$${total.toFixed(2)}</b></td><td style="width:30%"><span class="bar" style="width:${((100 * total) / max).toFixed(0)}%"></span></td></tr>`;
  }
  html += '</tbody></table>' + (months.length ? '' : '<div class="empty">No calls yet.</div>') + '</div>';
  view().innerHTML = html;
}

boot();
