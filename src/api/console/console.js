// creditgate operator console: one page over the admin API (docs/operations.md).
// No framework, no external loads. The admin token comes from the sign-in form
// or the URL fragment (#token=…&account=…), lives in sessionStorage, and is
// sent as a bearer header on every call. Every text from the API is put in
// the page as text, never as markup.
'use strict';

(() => {
  const TOKEN_KEY = 'creditgate.admin-token';
  const PAGE_SIZE = 100;
  const HISTORY_PAGE = 25;
  // Okabe–Ito: distinguishable with every common colour-vision deficiency.
  const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#8C6D1F', '#6A3D9A', '#999933', '#444444'];
  const OTHER_COLOR = '#9AA0A6';

  const $ = (id) => document.getElementById(id);
  const number = new Intl.NumberFormat('en-US');
  const fmt = (n) => (n === null || n === undefined ? '—' : number.format(n));

  const state = {
    token: null,
    accounts: [],
    next: null,
    selected: null,
    prices: null,
    routeColors: new Map(),
    history: { stack: [], cursor: null, next: null },
    sessionKeys: new Map(),
  };

  // ---- DOM helpers -------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = value;
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children.flat()) if (child) node.append(child);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function toast(message, kind) {
    const box = $('toast');
    box.textContent = message;
    box.className = 'toast' + (kind ? ' ' + kind : '');
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, kind === 'error' ? 8000 : 4000);
  }

  // ---- Time --------------------------------------------------------------

  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  function shortDay(day) { // "2026-11-24" → "Nov 24"
    const [, m, d] = day.split('-');
    return MONTHS[Number(m) - 1] + ' ' + Number(d);
  }
  function utcText(iso) { // "2026-11-24T11:59:58.5Z" → "2026-11-24 11:59:58"
    return iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, '');
  }
  function relative(iso, now) {
    const seconds = Math.round((Date.parse(iso) - now) / 1000);
    const abs = Math.abs(seconds);
    const [value, unit] = abs < 90 ? [abs, 'second'] : abs < 5400 ? [Math.round(abs / 60), 'minute']
      : abs < 129600 ? [Math.round(abs / 3600), 'hour'] : [Math.round(abs / 86400), 'day'];
    const text = value + ' ' + unit + (value === 1 ? '' : 's');
    return seconds >= 0 ? 'in ' + text : text + ' ago';
  }
  function windowText(seconds) {
    if (seconds % 86400 === 0) return seconds / 86400 + (seconds === 86400 ? ' day' : ' days');
    if (seconds % 3600 === 0) return seconds / 3600 + ' hours';
    return seconds + ' seconds';
  }

  // ---- API ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || 'HTTP ' + status);
      this.status = status;
      this.code = problem && problem.code;
    }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: 'Bearer ' + state.token, Accept: 'application/json' };
    if (options.body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method: options.method || 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (response.status === 401) {
      signOut('The admin token was refused. Enter it again.');
      throw new ApiError(401, body);
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  const enc = encodeURIComponent;
  const accountPath = (id, rest = '') => '/admin/v1/accounts/' + enc(id) + rest;

  // ---- Sign-in and the URL fragment --------------------------------------

  // `#token=…&account=…&view=prices`: the token is taken and removed.
  function readFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get('token');
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      // The token leaves the address bar (and the tab's history) at once.
      params.delete('token');
      const rest = params.toString();
      history.replaceState(null, '', location.pathname + (rest ? '#' + rest : ''));
    }
    return { account: params.get('account'), view: params.get('view') };
  }

  function setFragment(fragment) {
    const target = fragment ? '#' + fragment : '';
    if (location.hash !== target) history.replaceState(null, '', location.pathname + target);
  }

  function showSignIn(message) {
    $('console').hidden = true;
    $('views').hidden = true;
    $('sign-out').hidden = true;
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message || '';
    $('token-input').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    showSignIn(message);
  }

  async function start(fragment) {
    state.token = sessionStorage.getItem(TOKEN_KEY);
    readiness();
    if (!state.token) return showSignIn();
    $('sign-in').hidden = true;
    $('console').hidden = false;
    $('views').hidden = false;
    $('sign-out').hidden = false;
    try {
      await loadPrices();
      await loadAccounts(false);
    } catch (error) {
      if (error.status !== 401) toast('Could not load the console: ' + error.message, 'error');
      return;
    }
    if (fragment.account) await selectAccount(fragment.account);
    if (fragment.view === 'prices') showView('prices');
  }

  async function readiness() {
    const status = $('ledger-status');
    try {
      const response = await fetch('/readyz', { cache: 'no-store', credentials: 'omit' });
      const body = await response.json();
      status.textContent = 'Ledger ' + body.ledger + ' · ' + (response.ok ? 'ready' : 'unreachable');
      status.className = 'ledger-status ' + (response.ok ? 'ok' : 'bad');
    } catch (_) {
      status.textContent = 'Gateway unreachable';
      status.className = 'ledger-status bad';
    }
  }

  // ---- Prices, plans and route colours -----------------------------------

  async function loadPrices() {
    state.prices = await api('/admin/v1/prices');
    state.routeColors.clear();
    state.prices.routes.forEach((route, i) => state.routeColors.set(route.route, PALETTE[i % PALETTE.length]));
    for (const node of document.querySelectorAll('.window-text')) node.textContent = windowText(state.prices.window_seconds);
    fillPlanSelect($('plan-select'));
    fillPlanSelect($('new-account-plan'));
    renderPrices();
  }

  function colorOf(route) {
    if (!state.routeColors.has(route)) {
      // A route no longer configured (renamed or removed) keeps a colour of its own.
      state.routeColors.set(route, state.routeColors.size < PALETTE.length ? PALETTE[state.routeColors.size] : OTHER_COLOR);
    }
    return state.routeColors.get(route);
  }

  function fillPlanSelect(select) {
    clear(select);
    for (const plan of state.prices.plans) {
      select.append(el('option', { value: plan.plan, text: plan.plan + ' — ' + fmt(plan.monthly_allowance) + ' credits' }));
    }
  }

  function priceText(route) {
    if (route.cost === 0) return 'free';
    const per = route.units ? route.units.per : 1;
    const credits = fmt(route.cost) + (route.cost === 1 ? ' credit' : ' credits');
    if (!route.units) return credits + ' per request';
    return credits + ' per ' + (per === 1 ? 'unit' : fmt(per) + ' units');
  }

  function renderPrices() {
    const table = clear($('prices'));
    table.append(el('thead', {}, el('tr', {},
      ['Route', 'Method', 'Path', 'Price', 'Units (request body)', 'Settlement'].map((h) => el('th', { scope: 'col', text: h })))));
    const body = el('tbody');
    for (const route of state.prices.routes) {
      const units = route.units
        ? [el('code', { text: route.units.json }), ' default ' + fmt(route.units.default) + ', max ' + fmt(route.units.max)]
        : '—';
      const settle = route.settle
        ? [el('code', { text: route.settle.json || route.settle.header }),
          route.settle.header ? ' (header)' : '',
          ' per ' + fmt(route.settle.per) + (route.settle.max !== null ? ', at most ' + fmt(route.settle.max) : ', at most the reservation')]
        : 'none: the admission price stands';
      body.append(el('tr', {},
        el('th', { scope: 'row' }, el('span', { class: 'swatch', 'aria-hidden': 'true', 'data-color': colorOf(route.route) }), route.route),
        el('td', {}, route.method || 'any'),
        el('td', {}, el('code', { text: route.path })),
        el('td', { class: 'num' }, priceText(route)),
        el('td', {}, units),
        el('td', {}, settle)));
    }
    table.append(body);
    paintSwatches(table);
    const plans = clear($('plans'));
    plans.append(el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Plan' }), el('th', { scope: 'col', class: 'num', text: 'Monthly allowance' }))));
    plans.append(el('tbody', {}, state.prices.plans.map((p) =>
      el('tr', {}, el('th', { scope: 'row', text: p.plan }), el('td', { class: 'num', text: fmt(p.monthly_allowance) })))));
  }

  // Colours set through the CSSOM (the policy forbids style attributes).
  function paintSwatches(root) {
    for (const node of root.querySelectorAll('[data-color]')) node.style.backgroundColor = node.dataset.color;
  }

  // ---- Account list ------------------------------------------------------

  async function loadAccounts(more) {
    const query = '?limit=' + PAGE_SIZE + (more && state.next ? '&after=' + enc(state.next) : '');
    const page = await api('/admin/v1/accounts' + query);
    state.accounts = more ? state.accounts.concat(page.items) : page.items;
    state.next = page.next;
    renderAccountList();
    renderOverview();
  }

  function showOverview() {
    state.selected = null;
    $('detail').hidden = true;
    $('overview').hidden = false;
    renderAccountList();
  }

  function shareOf(account) {
    return account.used !== null && account.monthly_allowance > 0 ? account.used / account.monthly_allowance : 0;
  }

  function renderOverview() {
    const accounts = state.accounts;
    const used = accounts.reduce((sum, a) => sum + (a.used || 0), 0);
    const near = accounts.filter((a) => shareOf(a) >= 0.8);
    $('ov-accounts').textContent = fmt(accounts.length) + (state.next ? '+' : '');
    $('ov-accounts-sub').textContent = state.next ? 'first ' + fmt(accounts.length) + ' loaded' : 'all accounts';
    $('ov-used').textContent = fmt(used);
    $('ov-used-sub').textContent = 'across ' + (state.next ? 'the loaded' : 'all') + ' accounts';
    $('ov-near').textContent = fmt(near.length);
    $('ov-suspended').textContent = fmt(accounts.filter((a) => a.suspended).length);
    $('overview-note').textContent = state.next ? 'from the accounts loaded so far' : '';
    const table = clear($('closest'));
    table.append(el('thead', {}, el('tr', {}, ['Account', 'Plan', 'Used', 'Allowance', 'Share', ''].map((h, i) =>
      el('th', { scope: 'col', class: i >= 2 && i <= 4 ? 'num' : '', text: h })))));
    const body = el('tbody');
    const ranked = accounts.slice().sort((a, b) => shareOf(b) - shareOf(a) || a.account.localeCompare(b.account)).slice(0, 12);
    for (const account of ranked) {
      const share = shareOf(account);
      const bar = el('span', { class: 'mini-bar wide-bar', 'aria-hidden': 'true' }, el('span', { class: 'mini-fill' + (share >= 0.95 ? ' hot' : share >= 0.8 ? ' warm' : '') }));
      bar.firstChild.style.width = (Math.min(1, share) * 100).toFixed(1) + '%';
      body.append(el('tr', {},
        el('th', { scope: 'row' }, el('button', { type: 'button', class: 'link', onclick: () => selectAccount(account.account) }, account.account),
          account.suspended ? el('span', { class: 'badge danger tiny spaced', text: 'suspended' }) : null),
        el('td', {}, el('span', { class: 'badge tiny', text: account.plan })),
        el('td', { class: 'num', text: account.used === null ? 'needs a recount' : fmt(account.used) }),
        el('td', { class: 'num', text: fmt(account.monthly_allowance) }),
        el('td', { class: 'num', text: (share * 100).toFixed(0) + '%' }),
        el('td', { class: 'bar-cell' }, bar)));
    }
    if (!ranked.length) body.append(el('tr', {}, el('td', { colspan: '6', class: 'muted', text: 'No accounts yet: create one with New.' })));
    table.append(body);
  }

  function renderAccountList() {
    const list = clear($('account-list'));
    const term = $('search').value.trim().toLowerCase();
    const shown = state.accounts.filter((a) => !term || a.account.toLowerCase().includes(term));
    $('account-count').textContent = state.next ? fmt(state.accounts.length) + '+' : fmt(state.accounts.length);
    for (const account of shown) {
      const share = account.used !== null && account.monthly_allowance > 0 ? Math.min(1, account.used / account.monthly_allowance) : 0;
      const bar = el('span', { class: 'mini-bar', 'aria-hidden': 'true' }, el('span', { class: 'mini-fill' + (share >= 0.95 ? ' hot' : share >= 0.8 ? ' warm' : '') }));
      bar.firstChild.style.width = (share * 100).toFixed(1) + '%';
      const usage = account.used === null ? 'needs a recount'
        : fmt(account.used) + ' / ' + fmt(account.monthly_allowance);
      const button = el('button', {
        type: 'button',
        class: 'account-item' + (state.selected === account.account ? ' selected' : ''),
        'aria-current': state.selected === account.account ? 'true' : false,
        onclick: () => selectAccount(account.account),
      },
      el('span', { class: 'account-line' },
        el('span', { class: 'account-name', text: account.account }),
        account.suspended ? el('span', { class: 'badge danger tiny', text: 'suspended' }) : null,
        el('span', { class: 'badge tiny', text: account.plan })),
      el('span', { class: 'account-line muted small' }, bar, el('span', { text: usage })));
      list.append(el('li', {}, button));
    }
    if (term && !state.accounts.some((a) => a.account.toLowerCase() === term)) {
      const id = $('search').value.trim();
      if (/^[A-Za-z0-9._-]{1,64}$/.test(id) && id !== '.' && id !== '..') {
        list.append(el('li', {}, el('button', { type: 'button', class: 'account-item open-exact', onclick: () => selectAccount(id) },
          'Open account ', el('strong', { text: id }))));
      }
    }
    if (!list.firstChild) list.append(el('li', { class: 'muted small pad', text: state.accounts.length ? 'No account matches.' : 'No accounts yet.' }));
    $('more-accounts').hidden = !state.next;
  }

  // ---- One account -------------------------------------------------------

  async function selectAccount(id) {
    state.selected = id;
    state.history = { stack: [], cursor: null, next: null };
    setFragment('account=' + enc(id));
    renderAccountList();
    showView('accounts', true);
    try {
      await refreshAccount();
      $('detail').hidden = false;
      $('overview').hidden = true;
    } catch (error) {
      if (error.status === 404) {
        showOverview();
        toast('No account "' + id + '".', 'error');
      } else if (error.status !== 401) {
        toast('Could not load ' + id + ': ' + error.message, 'error');
      }
    }
  }

  async function refreshAccount() {
    const id = state.selected;
    const [account, usage] = await Promise.all([api(accountPath(id)), api(accountPath(id, '/usage'))]);
    if (state.selected !== id) return;
    renderAccount(account, usage);
    await loadHistory(state.history.cursor);
    renderKeys();
  }

  function renderAccount(account, usage) {
    const now = Date.parse(usage.as_of);
    $('acct-id').textContent = account.account;
    $('acct-plan').textContent = account.plan;
    $('acct-suspended').hidden = !account.suspended;
    $('acct-as-of').textContent = 'as of ' + utcText(usage.as_of) + ' UTC';
    const select = $('plan-select');
    if (![...select.options].some((o) => o.value === account.plan)) {
      select.append(el('option', { value: account.plan, text: account.plan + ' — not configured' }));
    }
    select.value = account.plan;
    $('plan-save').disabled = true;
    const toggle = $('suspend-toggle');
    toggle.textContent = account.suspended ? 'Reinstate' : 'Suspend';
    toggle.className = 'button small ' + (account.suspended ? 'primary' : 'danger');
    toggle.dataset.suspended = account.suspended ? '1' : '0';

    const allowance = usage.monthly_allowance;
    const share = allowance > 0 ? usage.used / allowance : 0;
    $('stat-used').textContent = fmt(usage.used);
    $('stat-used-sub').textContent = allowance > 0 ? (share * 100).toFixed(share < 0.1 ? 1 : 0) + '% of the allowance' : 'no allowance';
    const fill = $('meter-fill');
    fill.style.width = Math.min(100, share * 100).toFixed(1) + '%';
    fill.className = 'meter-fill' + (share >= 0.95 ? ' hot' : share >= 0.8 ? ' warm' : '');
    $('stat-available').textContent = fmt(usage.available);
    $('stat-available-sub').textContent = usage.available === 0 ? 'priced requests are refused' : 'credits to spend now';
    $('stat-allowance').textContent = fmt(allowance);
    $('stat-allowance-sub').textContent = 'plan ' + account.plan + ' · sliding ' + windowText(usage.window_seconds);
    if (account.next_release) {
      $('stat-release').textContent = '+' + fmt(account.next_release.credits);
      $('stat-release-sub').textContent = relative(account.next_release.at, now) + ' · ' + utcText(account.next_release.at) + ' UTC';
    } else {
      $('stat-release').textContent = '—';
      $('stat-release-sub').textContent = 'nothing in the window';
    }
    renderChart(usage);
    renderReturning(usage);
    renderRoutes(usage);
  }

  // Round numbers for an axis: 1, 2, 2.5 or 5 × 10^k.
  function niceStep(max, ticks) {
    const raw = Math.max(1, max) / ticks;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
    return Math.max(1, step);
  }

  function routeOrder(usage) {
    const configured = state.prices ? state.prices.routes.map((r) => r.route) : [];
    const spent = usage.by_route.map((r) => r.route);
    return configured.filter((r) => spent.includes(r)).concat(spent.filter((r) => !configured.includes(r)));
  }

  function renderChart(usage) {
    const days = usage.by_day;
    const routes = routeOrder(usage);
    const W = 760, H = 300, left = 52, right = 10, top = 22, bottom = 30;
    const plotW = W - left - right, plotH = H - top - bottom;
    const max = Math.max(0, ...days.map((d) => d.credits));
    const step = niceStep(max, 4);
    const yMax = Math.max(step, Math.ceil(max / step) * step);
    const y = (v) => top + plotH - (v / yMax) * plotH;
    const slot = plotW / days.length;
    const barW = Math.max(2, slot * 0.68);
    const total = days.reduce((sum, d) => sum + d.credits, 0);
    const busiest = days.reduce((best, d) => (d.credits > best.credits ? d : best), days[0]);
    const summary = 'Credits per day, ' + shortDay(days[0].day) + ' to ' + shortDay(days[days.length - 1].day) + ': ' + fmt(total) + ' in all'
      + (total > 0 ? ', most on ' + shortDay(busiest.day) + ' (' + fmt(busiest.credits) + ')' : '') + '.';
    const chart = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': summary, class: 'chart-svg' });
    chart.append(svg('title', { text: summary }));
    const grid = svg('g', { class: 'grid' });
    for (let v = 0; v <= yMax; v += step) {
      grid.append(svg('line', { x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      grid.append(svg('text', { x: left - 8, y: y(v) + 4, 'text-anchor': 'end', class: 'axis', text: fmt(v) }));
    }
    chart.append(grid);
    chart.append(svg('text', { x: left - 8, y: 10, 'text-anchor': 'end', class: 'axis unit', text: 'credits' }));
    const bars = svg('g', {});
    days.forEach((day, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      let base = 0;
      for (const route of routes) {
        const credits = (day.by_route && day.by_route[route]) || 0;
        if (!credits) continue;
        const y0 = y(base), y1 = y(base + credits);
        bars.append(svg('rect', { x: x.toFixed(2), y: y1.toFixed(2), width: barW.toFixed(2), height: Math.max(0.5, y0 - y1).toFixed(2), fill: colorOf(route), class: 'bar' }));
        base += credits;
      }
      const isToday = i === days.length - 1;
      if (i % 5 === 0 || isToday) {
        chart.append(svg('text', { x: (left + i * slot + slot / 2).toFixed(2), y: H - 10, 'text-anchor': 'middle', class: 'axis' + (isToday ? ' today' : ''), text: isToday ? 'today' : shortDay(day.day) }));
      }
      // One hover target per day, with the day's breakdown as its tooltip.
      const parts = routes.filter((r) => day.by_route && day.by_route[r]).map((r) => r + ' ' + fmt(day.by_route[r]));
      const hover = svg('rect', { x: (left + i * slot).toFixed(2), y: top, width: slot.toFixed(2), height: plotH, class: 'hover' });
      hover.append(svg('title', { text: shortDay(day.day) + ': ' + fmt(day.credits) + ' credits' + (parts.length ? ' (' + parts.join(', ') + ')' : '') }));
      bars.append(hover);
    });
    chart.append(bars);
    chart.append(svg('line', { x1: left, x2: W - right, y1: y(0), y2: y(0), class: 'baseline' }));
    if (total === 0) {
      chart.append(svg('text', { x: left + plotW / 2, y: top + plotH / 2, 'text-anchor': 'middle', class: 'empty-note', text: 'No credits spent in the window' }));
    }
    clear($('chart')).append(chart);

    const legend = clear($('legend'));
    for (const route of usage.by_route) {
      legend.append(el('li', {}, el('span', { class: 'swatch', 'aria-hidden': 'true', 'data-color': colorOf(route.route) }),
        el('span', { class: 'legend-name', text: route.route }), el('span', { class: 'legend-value', text: fmt(route.credits) })));
    }
    paintSwatches(legend);

    const table = clear($('day-table'));
    table.append(el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Day (UTC)' }),
      routes.map((r) => el('th', { scope: 'col', class: 'num', text: r })), el('th', { scope: 'col', class: 'num', text: 'Total' }))));
    table.append(el('tbody', {}, days.slice().reverse().map((d) => el('tr', {}, el('th', { scope: 'row', text: d.day }),
      routes.map((r) => el('td', { class: 'num', text: fmt((d.by_route && d.by_route[r]) || 0) })), el('td', { class: 'num', text: fmt(d.credits) })))));
  }

  function renderReturning(usage) {
    const list = clear($('returning'));
    if (!usage.returning.length) {
      list.append(el('li', { class: 'muted small', text: 'Nothing in the window.' }));
      return;
    }
    const max = Math.max(...usage.returning.map((r) => r.credits));
    const todayMs = Date.parse(usage.as_of.slice(0, 10) + 'T00:00:00Z');
    const shown = usage.returning.slice(0, 7);
    let back = 0;
    for (const day of shown) {
      back += day.credits;
      const offset = Math.round((Date.parse(day.day + 'T00:00:00Z') - todayMs) / 86400000);
      const when = offset === 0 ? 'today' : offset === 1 ? 'tomorrow' : 'in ' + offset + ' days';
      const bar = el('span', { class: 'return-bar', 'aria-hidden': 'true' }, el('span', { class: 'return-fill' }));
      bar.firstChild.style.width = Math.max(2, (day.credits / max) * 100).toFixed(1) + '%';
      list.append(el('li', {},
        el('span', { class: 'return-day' }, el('strong', { text: shortDay(day.day) }), el('span', { class: 'muted small', text: ' ' + when })),
        bar,
        el('span', { class: 'return-credits', text: '+' + fmt(day.credits) })));
    }
    const rest = usage.returning.slice(shown.length);
    if (rest.length) {
      const credits = rest.reduce((sum, r) => sum + r.credits, 0);
      list.append(el('li', { class: 'muted small', text: '… and ' + fmt(credits) + ' more over ' + rest.length + ' later days' }));
    }
    list.append(el('li', { class: 'returning-note muted small', text: 'Available after the ' + shown.length + (shown.length === 1 ? ' day' : ' days') + ' above, with no new spending: ' + fmt(Math.max(0, usage.monthly_allowance - (usage.used - back))) }));
  }

  function renderRoutes(usage) {
    const table = clear($('route-table'));
    table.append(el('thead', {}, el('tr', {}, ['Route', 'Credits', 'Share', 'Requests', 'Avg / request'].map((h, i) =>
      el('th', { scope: 'col', class: i ? 'num' : '', text: h })))));
    const body = el('tbody');
    for (const route of usage.by_route) {
      const share = usage.used > 0 ? route.credits / usage.used : 0;
      body.append(el('tr', {},
        el('th', { scope: 'row' }, el('span', { class: 'swatch', 'aria-hidden': 'true', 'data-color': colorOf(route.route) }), route.route),
        el('td', { class: 'num', text: fmt(route.credits) }),
        el('td', { class: 'num', text: (share * 100).toFixed(1) + '%' }),
        el('td', { class: 'num', text: fmt(route.requests) }),
        el('td', { class: 'num', text: route.requests ? (route.credits / route.requests).toFixed(1).replace(/\.0$/, '') : '—' })));
    }
    if (!usage.by_route.length) body.append(el('tr', {}, el('td', { colspan: '5', class: 'muted', text: 'No debits in the window.' })));
    table.append(body);
    paintSwatches(table);
  }

  // ---- History -----------------------------------------------------------

  async function loadHistory(cursor) {
    const id = state.selected;
    const query = '?limit=' + HISTORY_PAGE + (cursor ? '&before=' + enc(cursor) : '');
    const page = await api(accountPath(id, '/history') + query);
    if (state.selected !== id) return;
    state.history.cursor = cursor;
    state.history.next = page.next;
    renderHistory(page.items);
  }

  function renderHistory(items) {
    const table = clear($('history'));
    const now = Date.now();
    table.append(el('thead', {}, el('tr', {}, ['Time (UTC)', 'Route', 'Cost', 'Request id', 'Status', ''].map((h, i) =>
      el('th', { scope: 'col', class: i === 2 ? 'num' : '', text: h })))));
    const body = el('tbody');
    for (const item of items) {
      const refund = el('button', {
        type: 'button',
        class: 'link',
        disabled: item.refunded,
        'aria-label': 'Refund ' + item.request_id,
        onclick: () => refundDebit(item),
      }, 'Refund');
      body.append(el('tr', { class: item.refunded ? 'refunded' : '' },
        el('td', { title: relative(item.at, now) }, utcText(item.at)),
        el('td', {}, el('span', { class: 'swatch', 'aria-hidden': 'true', 'data-color': colorOf(item.route) }), item.route),
        el('td', { class: 'num', text: fmt(item.cost) }),
        el('td', {}, el('code', { class: 'request-id', title: item.request_id, text: item.request_id })),
        el('td', {}, item.refunded ? el('span', { class: 'badge muted-badge', text: 'refunded' }) : el('span', { class: 'badge ok', text: 'charged' })),
        el('td', { class: 'action' }, refund)));
    }
    if (!items.length) body.append(el('tr', {}, el('td', { colspan: '6', class: 'muted', text: 'No debits recorded.' })));
    table.append(body);
    paintSwatches(table);
    $('history-older').disabled = !state.history.next;
    $('history-first').disabled = state.history.stack.length === 0;
  }

  // ---- Changes through the admin API --------------------------------------

  async function refundDebit(item) {
    if (!confirm('Refund ' + fmt(item.cost) + ' credits of request ' + item.request_id + ' (' + item.route + ')?')) return;
    try {
      const result = await api(accountPath(state.selected, '/refunds'), { method: 'POST', body: { request_id: item.request_id } });
      toast(result.already_refunded ? 'Already refunded.' : 'Refunded ' + fmt(item.cost) + ' credits.', 'ok');
      await Promise.all([refreshAccount(), loadAccounts(false)]);
    } catch (error) {
      if (error.status !== 401) toast('Refund failed: ' + error.message, 'error');
    }
  }

  async function putAccount(id, change, message) {
    try {
      await api(accountPath(id), { method: 'PUT', body: change });
      toast(message, 'ok');
      await Promise.all([refreshAccount(), loadAccounts(false)]);
    } catch (error) {
      if (error.status !== 401) toast('Change refused: ' + error.message, 'error');
    }
  }

  async function createKey() {
    const id = state.selected;
    try {
      const created = await api(accountPath(id, '/keys'), { method: 'POST' });
      if (!state.sessionKeys.has(id)) state.sessionKeys.set(id, []);
      state.sessionKeys.get(id).push(created.key_id);
      renderKeys();
      $('key-account').textContent = id;
      $('key-id').textContent = created.key_id;
      $('key-value').value = created.key;
      $('key-dialog').showModal();
      $('key-value').select();
    } catch (error) {
      if (error.status !== 401) toast('Could not create a key: ' + error.message, 'error');
    }
  }

  async function revokeKey(keyId) {
    const id = state.selected;
    if (!confirm('Revoke key ' + keyId + ' of ' + id + '? Clients using it are refused from then on.')) return;
    try {
      await api(accountPath(id, '/keys/' + enc(keyId)), { method: 'DELETE' });
      const keys = state.sessionKeys.get(id) || [];
      state.sessionKeys.set(id, keys.filter((k) => k !== keyId));
      renderKeys();
      $('revoke-input').value = '';
      toast('Key ' + keyId + ' revoked.', 'ok');
    } catch (error) {
      if (error.status !== 401) toast('Revocation failed: ' + error.message, 'error');
    }
  }

  function renderKeys() {
    const list = clear($('session-keys'));
    for (const keyId of state.sessionKeys.get(state.selected) || []) {
      list.append(el('li', {}, el('code', { text: keyId }),
        el('button', { type: 'button', class: 'button small quiet', 'aria-label': 'Revoke ' + keyId, onclick: () => revokeKey(keyId) }, 'Revoke')));
    }
  }

  // ---- Views and wiring --------------------------------------------------

  function showView(view, keepFragment) {
    $('view-accounts').hidden = view !== 'accounts';
    $('view-prices').hidden = view !== 'prices';
    if (!keepFragment) setFragment(view === 'prices' ? 'view=prices' : state.selected ? 'account=' + enc(state.selected) : '');
    for (const tab of document.querySelectorAll('.view-tab')) {
      if (tab.dataset.view === view) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    }
  }

  function wire() {
    $('sign-in-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('token-input').value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token-input').value = '';
      start(readFragment());
    });
    $('sign-out').addEventListener('click', () => signOut('Signed out. The token was removed from this tab.'));
    for (const tab of document.querySelectorAll('.view-tab')) tab.addEventListener('click', () => showView(tab.dataset.view));
    $('search').addEventListener('input', renderAccountList);
    $('search').addEventListener('keydown', (event) => {
      if (event.key !== 'Enter') return;
      const first = $('account-list').querySelector('button');
      if (first) first.click();
    });
    $('more-accounts').addEventListener('click', () => loadAccounts(true).catch((e) => toast(e.message, 'error')));
    $('refresh').addEventListener('click', () => Promise.all([refreshAccount(), loadAccounts(false)]).catch((e) => toast(e.message, 'error')));
    $('plan-select').addEventListener('change', () => { $('plan-save').disabled = false; });
    $('plan-save').addEventListener('click', () => {
      const plan = $('plan-select').value;
      putAccount(state.selected, { plan }, 'Plan changed to ' + plan + '; it applies to the next request.');
    });
    $('suspend-toggle').addEventListener('click', () => {
      const suspended = $('suspend-toggle').dataset.suspended === '1';
      if (!suspended && !confirm('Suspend ' + state.selected + '? Its requests are refused (403) until it is reinstated.')) return;
      putAccount(state.selected, { suspended: !suspended }, suspended ? 'Account reinstated.' : 'Account suspended.');
    });
    $('history-older').addEventListener('click', () => {
      state.history.stack.push(state.history.cursor);
      loadHistory(state.history.next).catch((e) => toast(e.message, 'error'));
    });
    $('history-first').addEventListener('click', () => {
      state.history.stack = [];
      loadHistory(null).catch((e) => toast(e.message, 'error'));
    });
    $('key-create').addEventListener('click', createKey);
    $('back-overview').addEventListener('click', () => { showOverview(); setFragment(''); });
    $('key-copy').addEventListener('click', async () => {
      const input = $('key-value');
      input.select();
      try { await navigator.clipboard.writeText(input.value); toast('Key copied.', 'ok'); } catch (_) { toast('Select the key and copy it (Ctrl+C).'); }
    });
    $('revoke-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const keyId = $('revoke-input').value.trim();
      if (keyId) revokeKey(keyId);
    });
    $('new-account').addEventListener('click', () => {
      $('account-error').textContent = '';
      $('new-account-id').value = '';
      $('account-dialog').showModal();
    });
    $('account-cancel').addEventListener('click', () => $('account-dialog').close());
    $('account-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const id = $('new-account-id').value.trim();
      const plan = $('new-account-plan').value;
      try {
        await api(accountPath(id), { method: 'PUT', body: { plan } });
        $('account-dialog').close();
        toast('Account ' + id + ' saved on plan ' + plan + '.', 'ok');
        await loadAccounts(false);
        await selectAccount(id);
      } catch (error) {
        $('account-error').textContent = error.message;
      }
    });
    window.addEventListener('hashchange', () => {
      const pasted = new URLSearchParams(location.hash.slice(1)).has('token');
      const fragment = readFragment();
      if (pasted) return start(fragment);
      if (state.token && fragment.account && fragment.account !== state.selected) selectAccount(fragment.account);
      if (state.token && fragment.view === 'prices') showView('prices', true);
    });
  }

  wire();
  start(readFragment());
})();
