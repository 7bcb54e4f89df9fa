// hookspool console: a small page over the hookspool HTTP API. Every read and change goes
// through the API's own routes; errors are the API's, shown on the page. No framework, no
// build step, nothing loaded from elsewhere. Text is always set as text, never as HTML.
'use strict';

const CONSOLE = document.querySelector('meta[name="hookspool-console"]').content;
const API = document.querySelector('meta[name="hookspool-api"]').content;
const REFRESH_MS = 5000;
const PAGE = 25;
const PHASES = ['pending', 'in_flight', 'done', 'dead', 'expired'];

let csrf = null;
let view = null;
let timer = null;
let routing = false;

// ---- DOM helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function time(ms) {
  if (ms === undefined || ms === null) return '';
  return new Date(Number(ms)).toISOString().replace('T', ' ').replace('Z', ' UTC');
}

function phaseBadge(p) {
  return h('span', { class: `phase phase-${p}` }, p);
}

function enc(s) { return encodeURIComponent(s); }

let flashAt = 0;

function flash(text, kind) {
  flashAt = Date.now();
  const box = document.getElementById('flash');
  fill(box, h('div', { class: `msg ${kind || 'ok'}`, role: kind === 'error' ? 'alert' : null }, text));
}

function clearFlash() { fill(document.getElementById('flash')); }

function showError(e) { flash(e.message || String(e), 'error'); }

function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty || 'Nothing here.');
  return h('div', { class: 'scroll' }, h('table', {},
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col', class: x.num ? 'num' : null }, x.label || x)))),
    h('tbody', {}, rows)));
}

// A button that asks once more, in place, before it acts.
function confirmButton(label, confirmLabel, action) {
  const btn = h('button', { type: 'button', class: 'danger' }, label);
  let armed = false;
  btn.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      btn.textContent = confirmLabel;
      btn.classList.add('confirm');
      return;
    }
    btn.disabled = true;
    try { await action(); } catch (e) { showError(e); }
    btn.disabled = false;
    armed = false;
    btn.textContent = label;
    btn.classList.remove('confirm');
  });
  return btn;
}

function actionButton(label, action, cls) {
  const btn = h('button', { type: 'button', class: cls || null }, label);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    try { await action(); } catch (e) { showError(e); }
    btn.disabled = false;
  });
  return btn;
}

// ---- API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function request(url, method, body) {
  const opts = { method: method || 'GET', credentials: 'same-origin', headers: { accept: 'application/json' } };
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (csrf && opts.method !== 'GET') opts.headers['x-hookspool-csrf'] = csrf;
  let resp;
  try {
    resp = await fetch(url, opts);
  } catch (e) {
    throw new ApiError(0, 'network', `the server did not answer (${e.message})`);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data && data.error,
      (data && data.message) || `the server answered ${resp.status}`);
    if (resp.status === 401) signedOut(err);
    throw err;
  }
  return data;
}

const api = (path, method, body) => request(API + path, method, body);
const own = (path, method, body) => request(`${CONSOLE}/api${path}`, method, body);

// ---- session -------------------------------------------------------------------------------

function signedOut(err) {
  csrf = null;
  stopRefresh();
  const why = err && err.code === 'session_expired'
    ? 'Your session has ended: sign in again.'
    : 'Sign in with an API token.';
  showLogin(why);
}

function showLogin(message) {
  document.getElementById('nav').hidden = true;
  const main = document.getElementById('main');
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'panel login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in'),
    h('p', { class: 'muted' }, message),
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'API token'), input),
    h('p', {}, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const s = await own('/login', 'POST', { token: input.value });
      csrf = s.csrf;
      clearFlash();
      start(true);
    } catch (e) {
      showError(e);
      input.focus();
    }
  });
  fill(main, form);
  input.focus();
}

async function start(auth) {
  document.getElementById('nav').hidden = false;
  document.getElementById('signout').hidden = !auth;
  if (!routing) window.addEventListener('hashchange', route);
  routing = true;
  route();
}

async function boot() {
  document.getElementById('signout').addEventListener('click', async () => {
    try { await own('/logout', 'POST'); } catch (_) { /* signed out either way */ }
    csrf = null;
    stopRefresh();
    showLogin('Signed out.');
  });
  try {
    const s = await own('/session');
    if (s.signed_in) {
      csrf = s.csrf || null;
      start(s.auth_required);
    } else {
      showLogin(s.ended ? 'Your session has ended: sign in again.' : 'Sign in with one of the server\'s API tokens.');
    }
  } catch (e) {
    if (e.status !== 401) fill(document.getElementById('main'), h('div', { class: 'msg error', role: 'alert' }, e.message));
  }
}

// ---- routing -------------------------------------------------------------------------------

function stopRefresh() {
  if (timer) clearInterval(timer);
  timer = null;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  // A malformed escape in a hand-typed address is kept as typed rather than thrown.
  const decode = (x) => { try { return decodeURIComponent(x); } catch (_) { return x; } };
  const parts = path.split('/').filter(Boolean).map(decode);
  return { parts, params: new URLSearchParams(query || '') };
}

function route() {
  if (document.getElementById('nav').hidden) return; // signed out
  stopRefresh();
  // A message outlives the navigation its action caused, and no other.
  if (Date.now() - flashAt > 1000) clearFlash();
  const { parts, params } = parseHash();
  let v;
  if (parts[0] === 'queues' && parts.length === 2) v = queueView(parts[1], params);
  else if (parts[0] === 'queues' && parts[2] === 'items' && parts.length === 4) v = itemView(parts[1], parts[3]);
  else if (parts[0] === 'subscriptions' && parts.length === 1) v = subscriptionsView(params);
  else if (parts[0] === 'subscriptions' && parts.length === 2) v = subscriptionView(parts[1]);
  else if (parts[0] === 'deliveries') v = deliveryView(parts[1]);
  else v = overviewView();
  view = v;
  for (const a of document.querySelectorAll('nav a')) {
    const here = a.getAttribute('href') === `#/${parts[0] || ''}` || (a.getAttribute('href') === '#/' && !parts[0]);
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  fill(main, v.el);
  document.title = `${v.title} · hookspool console`;
  main.focus();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  const v = view;
  try {
    await v.refresh();
  } catch (e) {
    if (v === view && e.status !== 401) showError(e);
  }
}

// ---- overview ------------------------------------------------------------------------------

function overviewView() {
  const queues = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const chart = h('div', {});
  const failing = h('div', {});
  const el = h('section', {},
    h('h1', {}, 'Overview'),
    h('h2', {}, 'Queues'), queues,
    h('h2', {}, 'Deliveries, last 15 minutes'), chart,
    h('h2', {}, 'Subscriptions failing now'), failing);
  return {
    el,
    title: 'Overview',
    async refresh() {
      const [list, stats] = await Promise.all([api('/queues'), own('/stats')]);
      fill(queues, table(
        [{ label: 'Queue' }, ...PHASES.map((p) => ({ label: p, num: true })), { label: 'total', num: true }],
        list.queues.map((q) => {
          const c = q.phases || {};
          const total = q.items;
          return h('tr', {},
            h('td', {}, h('a', { href: `#/queues/${enc(q.id)}` }, q.id)),
            PHASES.map((p) => h('td', { class: 'num' }, c[p] || 0)),
            h('td', { class: 'num' }, total));
        }), 'No queues yet.'));
      fill(chart, drawChart(stats));
      fill(failing, table(['Subscription', 'Failures', 'Last error', 'When'],
        stats.failing.map((f) => h('tr', {},
          h('td', {}, h('a', { href: `#/subscriptions/${enc(f.subscription)}` }, f.subscription)),
          h('td', { class: 'num' }, f.failures),
          h('td', {}, f.last_error || (f.last_status ? `HTTP ${f.last_status}` : '')),
          h('td', {}, time(f.last_at)))),
        'None: every subscription\'s last attempt succeeded.'));
    },
  };
}

function drawChart(stats) {
  const step = stats.step_secs || 10;
  const rate = (n, p) => (p.secs > 0.5 ? n / p.secs : 0);
  const points = stats.points.filter((p) => p.secs > 0.5);
  if (!points.length) return h('p', { class: 'muted' }, 'No outcomes yet.');
  const W = 900, H = 160, pad = 4;
  const peak = Math.max(0, ...points.map((p) => Math.max(rate(p.delivered, p), rate(p.failed, p))));
  const max = Math.max(1, peak);
  const slots = Math.round(900 / step);
  const bw = (W - 2 * pad) / slots;
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const offset = Math.max(0, slots - points.length);
  points.forEach((p, i) => {
    const x = pad + (offset + i) * bw;
    const dh = (rate(p.delivered, p) / max) * (H - 2 * pad);
    const fh = (rate(p.failed, p) / max) * (H - 2 * pad);
    s.append(svg('rect', { x, y: H - pad - dh, width: Math.max(1, bw / 2 - 1), height: dh, fill: '#1a7f37' }));
    s.append(svg('rect', { x: x + bw / 2, y: H - pad - fh, width: Math.max(1, bw / 2 - 1), height: fh, fill: '#c0262d' }));
  });
  const last = points[points.length - 1];
  const total = points.reduce((a, p) => ({ d: a.d + p.delivered, f: a.f + p.failed, t: a.t + p.secs }), { d: 0, f: 0, t: 0 });
  const summary = `Last ${Math.max(1, Math.round(total.t / 60))} min: ${total.d} delivered, ${total.f} failed attempts; ` +
    `now ${rate(last.delivered, last).toFixed(1)} deliveries/s and ${rate(last.failed, last).toFixed(1)} failures/s (peak ${peak.toFixed(1)}/s).`;
  s.setAttribute('aria-label', summary);
  return [s, h('div', { class: 'legend' }, h('span', { class: 'delivered' }, 'delivered/s'), h('span', { class: 'failed' }, 'failed/s')),
    h('p', { class: 'muted', id: 'chart-summary' }, summary)];
}

// ---- a queue -------------------------------------------------------------------------------

function queueView(id, params) {
  const phase = params.get('phase') || '';
  const order = params.get('order') === 'oldest' ? 'oldest' : 'newest';
  const after = params.get('after') || '';
  const counts = h('div', {});
  const items = h('div', {});
  const pager = h('div', { class: 'pager' });
  const link = (p) => {
    const q = new URLSearchParams({ ...(phase ? { phase } : {}), order, ...p });
    return `#/queues/${enc(id)}?${q}`;
  };
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Phase' },
    h('a', { href: `#/queues/${enc(id)}?${new URLSearchParams({ order })}`, 'aria-current': phase ? null : 'true' }, 'all'),
    PHASES.map((p) => h('a', { href: `#/queues/${enc(id)}?${new URLSearchParams({ phase: p, order })}`, 'aria-current': phase === p ? 'true' : null }, p)));
  const orderSel = h('select', { id: 'order' },
    h('option', { value: 'newest', selected: order === 'newest' }, 'newest first'),
    h('option', { value: 'oldest', selected: order === 'oldest' }, 'oldest first'));
  orderSel.addEventListener('change', () => {
    const q = new URLSearchParams({ ...(phase ? { phase } : {}), order: orderSel.value });
    location.hash = `#/queues/${enc(id)}?${q}`;
  });
  const confirmInput = h('input', { id: 'reset-confirm', autocomplete: 'off', spellcheck: 'false' });
  const resetForm = h('form', { class: 'row' },
    h('div', { class: 'field' }, h('label', { for: 'reset-confirm' }, `Type the queue id (${id}) to reset it`), confirmInput),
    h('button', { type: 'submit', class: 'danger', id: 'reset' }, 'Reset queue'));
  resetForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (confirmInput.value !== id) {
      flash(`Not reset: type the queue id "${id}" exactly to confirm.`, 'error');
      confirmInput.focus();
      return;
    }
    try {
      const r = await api(`/queues/${enc(id)}/reset`, 'POST');
      confirmInput.value = '';
      flash(`Reset ${id}: ${r.removed} items removed.`);
      refresh();
    } catch (e) { showError(e); }
  });
  const el = h('section', {},
    h('p', {}, h('a', { href: '#/' }, '← Overview')),
    h('h1', {}, `Queue ${id}`),
    counts,
    h('div', { class: 'panel row' },
      actionButton('Replay all dead items', async () => {
        const r = await api(`/queues/${enc(id)}/replay`, 'POST');
        flash(`${r.replayed} dead items of ${id} went back to pending.`);
        refresh();
      }),
      resetForm),
    h('h2', {}, 'Items'),
    h('div', { class: 'row' }, tabs, h('div', { class: 'field' }, h('label', { for: 'order' }, 'Order'), orderSel)),
    items, pager);
  return {
    el,
    title: `Queue ${id}`,
    async refresh() {
      const q = new URLSearchParams({ limit: PAGE, reverse: order === 'newest' });
      if (phase) q.set('phase', phase);
      if (after) q.set('after', after);
      const [c, list] = await Promise.all([api(`/queues/${enc(id)}/count`), api(`/queues/${enc(id)}/items?${q}`)]);
      fill(counts, h('dl', {}, Object.entries(c.phases).map(([p, n]) => [h('dt', {}, p), h('dd', {}, n)]),
        h('dt', {}, 'total'), h('dd', {}, c.total)));
      fill(items, table(['Key', 'Phase', 'Attempts', 'Updated', 'Payload'],
        list.items.map((it) => h('tr', {},
          h('td', {}, h('a', { href: `#/queues/${enc(id)}/items/${it.key}` }, it.key)),
          h('td', {}, phaseBadge(it.phase)),
          h('td', { class: 'num' }, it.attempts),
          h('td', {}, time(it.updated_at)),
          h('td', {}, h('code', {}, preview(it))))),
        phase ? `No ${phase} items.` : 'No items.'));
      const last = list.items[list.items.length - 1];
      fill(pager,
        after ? h('a', { href: link({}) }, order === 'newest' ? '« Newest' : '« Oldest') : null,
        list.items.length === PAGE && last ? h('a', { href: link({ after: last.key }), rel: 'next' }, 'Next page »') : null);
    },
  };
}

function payloadText(it) {
  if (it.payload_base64 !== undefined) return `(binary, base64) ${it.payload_base64}`;
  if (it.payload === undefined) return '';
  return typeof it.payload === 'string' ? it.payload : JSON.stringify(it.payload, null, 2);
}

function preview(it) {
  const t = payloadText(it).replace(/\s+/g, ' ');
  return t.length > 80 ? `${t.slice(0, 80)}…` : t;
}

// ---- an item -------------------------------------------------------------------------------

function itemView(id, key) {
  const details = h('div', {});
  const actions = h('div', { class: 'panel row' });
  const back = `#/queues/${enc(id)}`;
  const el = h('section', {},
    h('p', {}, h('a', { href: back }, `← Queue ${id}`)),
    h('h1', {}, `Item ${key} of ${id}`), actions, details);
  let phase = null;
  const moveSel = h('select', { id: 'move-phase' }, PHASES.map((p) => h('option', { value: p }, p)));
  const moveForm = h('form', { class: 'row' },
    h('div', { class: 'field' }, h('label', { for: 'move-phase' }, 'Move to phase'), moveSel),
    h('button', { type: 'submit', id: 'move' }, 'Move'));
  moveForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api(`/queues/${enc(id)}/items/${key}/phase`, 'PUT', { phase: moveSel.value, if_phase: phase });
      flash(`Item ${key} moved to ${moveSel.value}.`);
      refresh();
    } catch (e) { showError(e); }
  });
  const replay = actionButton('Replay', async () => {
    await api(`/queues/${enc(id)}/items/${key}/replay`, 'POST');
    flash(`Item ${key} went back to pending.`);
    refresh();
  });
  replay.id = 'replay';
  const del = confirmButton('Delete item', 'Really delete?', async () => {
    await api(`/queues/${enc(id)}/items/${key}`, 'DELETE');
    flash(`Item ${key} deleted.`);
    location.hash = back;
  });
  del.id = 'delete';
  fill(actions, replay, moveForm, del);
  return {
    el,
    title: `Item ${key} of ${id}`,
    async refresh() {
      const it = await api(`/queues/${enc(id)}/items/${key}`);
      phase = it.phase;
      replay.hidden = it.phase !== 'dead';
      const attempts = Object.entries(it.metadata || {}).filter(([k]) => k.startsWith('attempt.'));
      const meta = Object.entries(it.metadata || {}).filter(([k]) => !k.startsWith('attempt.'));
      fill(details,
        h('dl', {},
          h('dt', {}, 'Phase'), h('dd', {}, phaseBadge(it.phase)),
          h('dt', {}, 'Attempts'), h('dd', {}, it.attempts),
          h('dt', {}, 'Created'), h('dd', {}, time(it.created_at)),
          h('dt', {}, 'Updated'), h('dd', {}, time(it.updated_at)),
          h('dt', {}, 'Not before'), h('dd', {}, time(it.not_before)),
          h('dt', {}, 'Lease'), h('dd', {}, it.lease ? `${it.lease.owner} until ${time(it.lease.until)}` : 'none'),
          h('dt', {}, 'Last error'), h('dd', {}, it.last_error || 'none')),
        h('h2', {}, 'Payload'), h('pre', { id: 'payload' }, payloadText(it)),
        h('h2', {}, 'Metadata'),
        table(['Key', 'Value'], meta.map(([k, v]) => h('tr', {}, h('td', {}, h('code', {}, k)), h('td', {}, v))), 'No metadata.'),
        attempts.length ? [h('h2', {}, 'Recorded attempts'),
          table(['Key', 'Record'], attempts.map(([k, v]) => h('tr', {}, h('td', {}, h('code', {}, k)), h('td', {}, h('code', {}, v)))))] : null);
    },
  };
}

// ---- subscriptions -------------------------------------------------------------------------

function subscriptionsView(params) {
  const list = h('div', {});
  const inputs = {};
  const field = (name, label, el) => {
    inputs[name] = el;
    el.id = `filter-${name}`;
    el.name = name;
    el.value = params.get(name) || '';
    return h('div', { class: 'field' }, h('label', { for: el.id }, label), el);
  };
  const form = h('form', { class: 'panel row', role: 'search', 'aria-label': 'Filter subscriptions' },
    field('event', 'Event', h('input', {})),
    field('owner', 'Owner', h('input', {})),
    field('url', 'URL contains', h('input', {})),
    field('enabled', 'Enabled', h('select', {}, h('option', { value: '' }, 'any'), h('option', { value: 'yes' }, 'yes'), h('option', { value: 'no' }, 'no'))),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, el] of Object.entries(inputs)) if (el.value) q.set(k, el.value);
    location.hash = `#/subscriptions?${q}`;
  });
  const el = h('section', {}, h('h1', {}, 'Subscriptions'), form, list);
  return {
    el,
    title: 'Subscriptions',
    async refresh() {
      const owner = params.get('owner');
      const all = (await api(`/hooks/subscriptions${owner ? `?owner=${enc(owner)}` : ''}`)).subscriptions;
      const event = params.get('event') || '';
      const url = params.get('url') || '';
      const enabled = params.get('enabled') || '';
      const shown = all.filter((s) => (!event || s.events.some((e) => e.includes(event)))
        && (!url || s.url.includes(url))
        && (!enabled || (enabled === 'yes') === s.enabled));
      fill(list, table(['Id', 'Events', 'URL', 'Owner', 'Enabled'],
        shown.map((s) => h('tr', {},
          h('td', {}, h('a', { href: `#/subscriptions/${enc(s.id)}` }, s.id)),
          h('td', {}, s.events.join(', ')),
          h('td', {}, s.url),
          h('td', {}, s.owner || ''),
          h('td', {}, s.enabled ? 'yes' : 'no'))),
        all.length ? 'No subscription matches these filters.' : 'No subscriptions yet.'));
    },
  };
}

function subscriptionView(id) {
  const details = h('div', {});
  const secret = h('div', {});
  const recent = h('div', {});
  let enabled = null;
  const toggle = actionButton('…', async () => {
    await api(`/hooks/subscriptions/${enc(id)}`, 'PATCH', { enabled: !enabled });
    flash(`${id} ${enabled ? 'disabled' : 'enabled'}.`);
    refresh();
  });
  toggle.id = 'toggle';
  const rotate = actionButton('Rotate secret', async () => {
    const s = await api(`/hooks/subscriptions/${enc(id)}/rotate-secret`, 'POST');
    fill(secret, h('div', { class: 'panel' },
      h('p', {}, 'The new signing secret. It is shown this once: copy it to the receiver now. The old one keeps signing for the grace period.'),
      h('p', {}, h('code', { class: 'secret', id: 'new-secret' }, s.secret))));
    flash(`The secret of ${id} was rotated.`);
  });
  rotate.id = 'rotate';
  const test = actionButton('Send a test event', async () => {
    const r = await api(`/hooks/subscriptions/${enc(id)}/test`, 'POST');
    flash(`Test event sent: delivery ${r.delivery_id}.`);
    refresh();
  });
  test.id = 'test';
  const del = confirmButton('Delete subscription', 'Really delete?', async () => {
    await api(`/hooks/subscriptions/${enc(id)}`, 'DELETE');
    flash(`Subscription ${id} deleted.`);
    location.hash = '#/subscriptions';
  });
  del.id = 'delete';
  const el = h('section', {},
    h('p', {}, h('a', { href: '#/subscriptions' }, '← Subscriptions')),
    h('h1', {}, `Subscription ${id}`),
    h('div', { class: 'panel row' }, toggle, rotate, test, del),
    secret, details, h('h2', {}, 'Recent deliveries'), recent);
  return {
    el,
    title: `Subscription ${id}`,
    async refresh() {
      const [s, d] = await Promise.all([
        api(`/hooks/subscriptions/${enc(id)}`),
        api(`/deliveries?subscription=${enc(id)}&limit=20`)]);
      enabled = s.enabled;
      toggle.textContent = s.enabled ? 'Disable' : 'Enable';
      test.disabled = !s.enabled;
      fill(details, h('dl', {},
        h('dt', {}, 'URL'), h('dd', {}, s.url),
        h('dt', {}, 'Events'), h('dd', {}, s.events.join(', ')),
        h('dt', {}, 'Owner'), h('dd', {}, s.owner || 'none'),
        h('dt', {}, 'Enabled'), h('dd', { id: 'enabled' }, s.enabled ? 'yes' : 'no'),
        h('dt', {}, 'Signature'), h('dd', {}, String(s.scheme)),
        h('dt', {}, 'In flight at most'), h('dd', {}, s.max_in_flight || 'the server default'),
        h('dt', {}, 'Strict order'), h('dd', {}, s.strict_fifo ? 'yes' : 'no'),
        h('dt', {}, 'Created'), h('dd', {}, time(s.created_at))));
      fill(recent, deliveriesTable(d.deliveries, 'No deliveries among the newest 2,000.'));
    },
  };
}

function deliveriesTable(list, empty) {
  return table(['Delivery', 'Event', 'State', 'Attempts', 'Fired', 'Last error'],
    list.map((d) => h('tr', {},
      h('td', {}, h('a', { href: `#/deliveries/${enc(d.id)}` }, d.id)),
      h('td', {}, d.event),
      h('td', {}, phaseBadge(d.state)),
      h('td', { class: 'num' }, d.attempts.length),
      h('td', {}, time(d.created_at)),
      h('td', {}, d.last_error || ''))), empty);
}

// ---- a delivery ----------------------------------------------------------------------------

function deliveryView(id) {
  const input = h('input', { id: 'delivery-id', placeholder: 'msg_…', autocomplete: 'off', spellcheck: 'false', value: id || '' });
  const form = h('form', { class: 'panel row', role: 'search', 'aria-label': 'Find a delivery' },
    h('div', { class: 'field' }, h('label', { for: 'delivery-id' }, 'Delivery id'), input),
    h('button', { type: 'submit' }, 'Find'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/deliveries/${enc(input.value.trim())}`;
  });
  const body = h('div', {});
  const el = h('section', {}, h('h1', {}, id ? `Delivery ${id}` : 'Deliveries'), form, body);
  const replay = actionButton('Replay', async () => {
    await api(`/deliveries/${enc(id)}/replay`, 'POST');
    flash(`Delivery ${id} goes out again.`);
    refresh();
  });
  replay.id = 'replay';
  return {
    el,
    title: id ? `Delivery ${id}` : 'Deliveries',
    async refresh() {
      if (!id) {
        const d = await api('/deliveries?limit=20');
        fill(body, h('h2', {}, 'Newest deliveries'), deliveriesTable(d.deliveries, 'No deliveries yet.'));
        return;
      }
      const d = await api(`/deliveries/${enc(id)}`);
      replay.hidden = !['dead', 'gone', 'cancelled'].includes(d.state);
      fill(body,
        h('div', { class: 'row' }, replay),
        h('dl', {},
          h('dt', {}, 'State'), h('dd', { id: 'state' }, phaseBadge(d.state)),
          h('dt', {}, 'Event'), h('dd', {}, d.event),
          h('dt', {}, 'To'), h('dd', {}, d.subscription ? h('a', { href: `#/subscriptions/${enc(d.subscription)}` }, d.subscription) : (d.url || '')),
          h('dt', {}, 'Fired'), h('dd', {}, time(d.created_at)),
          h('dt', {}, 'Next attempt'), h('dd', {}, d.next_attempt ? time(d.next_attempt) : 'none'),
          h('dt', {}, 'Last error'), h('dd', {}, d.last_error || 'none'),
          d.request_id ? [h('dt', {}, 'Request id'), h('dd', {}, d.request_id)] : null),
        h('h2', {}, 'Attempts'),
        table([{ label: '#', num: true }, 'Sent', 'Status', { label: 'ms', num: true }, 'Error', 'Response (first KiB)'],
          d.attempts.map((a) => h('tr', {},
            h('td', { class: 'num' }, a.number),
            h('td', {}, time(a.at)),
            h('td', {}, a.status || ''),
            h('td', { class: 'num' }, a.duration_ms),
            h('td', {}, a.error || ''),
            h('td', {}, a.response ? h('pre', {}, a.response) : ''))),
          'Not attempted yet.'),
        h('h2', {}, 'Payload'),
        h('pre', {}, d.payload === undefined ? '(not JSON)' : JSON.stringify(d.payload, null, 2)));
    },
  };
}

boot();
