// forkyard's status page (served as /page.js): charts of the last 15 minutes of
// every pool (from GET /status/history), the lifecycle events as they happen (GET
// /events), hang dumps (GET /status), and the tables kept fresh (GET /).
//
// Nothing comes from elsewhere: the page's Content-Security-Policy allows scripts,
// styles and fetches from forkyard only. Whatever the server sends is put into the
// page as text (textContent, attributes), never parsed as markup, except the
// tables, which forkyard itself renders (escaped) and which are swapped in whole.
'use strict';

(function () {
  const REFRESH_MS = 2000; // tables and hang dumps
  const HISTORY_MS = 5000; // charts: the sampler's interval
  const WINDOW_S = 15 * 60;
  const MIN_SPAN_S = 60;
  const MAX_EVENTS = 200;
  // Every lifecycle event name (src/events.rs; a unit test checks this list):
  // EventSource hands a named event only to a listener for that name.
  const EVENT_NAMES = [
    'start', 'panic', 'security_warning', 'spawn', 'spawn_failed', 'ready',
    'pools_ready', 'exit', 'restart', 'ejection', 'post_fork_done', 'hook_start',
    'hook_finish', 'hook_fail', 'reload_start', 'reload_finish', 'drain_start',
    'drain_finish', 'shutdown', 'shutdown_complete', 'preloader_spawn',
    'preloader_ready', 'preloader_failed', 'preloader_exit', 'preloader_restart',
    'hang', 'worker_metrics_error', 'worker_metrics_ok',
  ];
  const COLORS = ['#0969da', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bf3989',
    '#1b7c83', '#953800', '#57606a', '#6639ba'];
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  const history = new Map(); // pool name -> samples, oldest first
  let poolOrder = [];
  let since = null;

  function node(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svgNode(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- Numbers

  function num(v) {
    const a = Math.abs(v);
    if (Number.isInteger(v)) return String(v);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }

  const FORMAT = {
    rate: (v) => num(v) + '/s',
    seconds: (v) => (v >= 1 ? num(v) + ' s' : num(v * 1000) + ' ms'),
    count: (v) => num(v),
    bytes: (v) => (v === 0 ? '0' : v >= 1073741824 ? (v / 1073741824).toFixed(1) + ' GiB'
      : v >= 1048576 ? (v / 1048576).toFixed(1) + ' MiB'
        : (v / 1024).toFixed(0) + ' KiB'),
  };

  // The smallest 1, 2, 2.5 or 5 times a power of ten at or above v.
  function niceMax(v, unit) {
    if (!(v > 0)) return unit === 'bytes' ? 1048576 : 1;
    if (unit === 'bytes') return niceMax(v / 1048576, 'count') * 1048576;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * 0.999999) return m * p;
    return 10 * p;
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  // ---- One chart

  const W = 360, H = 130, L = 54, R = 8, T = 8, B = 18;

  // spec: {title, unit, bars, series: [{name, color, points: [[t, v or null]]}]}
  function drawChart(fig, spec, t0, t1) {
    fig.replaceChildren();
    const last = (s) => {
      for (let i = s.points.length - 1; i >= 0; i--) if (s.points[i][1] !== null) return s.points[i][1];
      return null;
    };
    const caption = node('figcaption');
    caption.append(node('span', 'title', spec.title));
    let nowText;
    if (spec.nowText) {
      nowText = spec.nowText(spec.series.map(last));
    } else {
      const now = spec.now !== undefined ? spec.now : (spec.series.length ? last(spec.series[0]) : null);
      nowText = now === null ? '–' : FORMAT[spec.unit](now);
    }
    caption.append(node('span', 'now', nowText));
    fig.append(caption);

    let max = 0;
    let points = 0;
    if (spec.bars) {
      const n = spec.series.length ? spec.series[0].points.length : 0;
      for (let i = 0; i < n; i++) {
        let sum = 0;
        for (const s of spec.series) sum += s.points[i][1] || 0;
        max = Math.max(max, sum);
      }
    } else {
      for (const s of spec.series) for (const p of s.points) if (p[1] !== null) max = Math.max(max, p[1]);
    }
    const top = niceMax(max, spec.unit);
    const span = Math.max(t1 - t0, 1);
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);

    const svg = svgNode('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': spec.title });
    for (const f of [0, 0.5, 1]) {
      const yy = y(top * f).toFixed(1);
      svg.append(svgNode('line', { class: f === 0 ? 'axis' : 'grid', x1: L, x2: W - R, y1: yy, y2: yy }));
      svg.append(svgNode('text', { x: L - 4, y: Number(yy) + 3, 'text-anchor': 'end' }, FORMAT[spec.unit](top * f)));
    }
    svg.append(svgNode('text', { x: L, y: H - 4 }, clock(t0)));
    svg.append(svgNode('text', { x: W - R, y: H - 4, 'text-anchor': 'end' }, clock(t1)));

    if (spec.bars) {
      const n = spec.series.length ? spec.series[0].points.length : 0;
      const width = Math.max(2, ((W - L - R) * 4.5) / Math.max(span, 1) - 1);
      for (let i = 0; i < n; i++) {
        let base = 0;
        for (const s of spec.series) {
          const [t, v] = s.points[i];
          if (!v) continue;
          points += 1;
          svg.append(svgNode('rect', {
            class: 'bar', fill: s.color, x: (x(t) - width).toFixed(1), width: width.toFixed(1),
            y: y(base + v).toFixed(1), height: Math.max(1, y(base) - y(base + v)).toFixed(1),
          }));
          base += v;
        }
      }
    } else {
      for (const s of spec.series) {
        let d = '';
        let pen = false;
        let drawn = 0;
        let lone = null;
        for (const [t, v] of s.points) {
          if (v === null || t < t0) { pen = false; continue; }
          d += (pen ? 'L' : 'M') + x(t).toFixed(1) + ' ' + y(v).toFixed(1);
          pen = true;
          drawn += 1;
          lone = [t, v];
        }
        points += drawn;
        if (!d) continue;
        svg.append(svgNode('path', { class: 'series', d, stroke: s.color, 'data-points': drawn }));
        if (drawn === 1) {
          svg.append(svgNode('circle', { cx: x(lone[0]).toFixed(1), cy: y(lone[1]).toFixed(1), r: 2, fill: s.color }));
        }
      }
    }
    fig.append(svg);
    const legend = node('div', 'legend');
    if (spec.series.length > 1 || spec.bars) {
      for (const s of spec.series) {
        const item = node('span', null);
        const swatch = node('i');
        swatch.setAttribute('data-color', s.color);
        item.append(swatch, document.createTextNode(s.name));
        legend.append(item);
      }
    }
    fig.append(legend);
    // The swatches' colours: set through the CSSOM, which the policy allows.
    for (const i of legend.querySelectorAll('i')) i.style.background = i.getAttribute('data-color');
    fig.dataset.points = String(points);
  }

  // ---- A pool's charts

  function specs(samples) {
    const pts = (f) => samples.map((s) => [s.at_unix, f(s)]);
    const reasons = [...new Set(samples.flatMap((s) => Object.keys(s.restarts || {})))].sort();
    const slots = [...new Set(samples.flatMap((s) => (s.workers || []).map((w) => w.slot)))].sort((a, b) => a - b);
    const memory = (w) => (w ? (w.pss_bytes ?? w.rss_bytes ?? null) : null);
    const memorySeries = slots.map((slot, i) => ({
      name: 'slot ' + slot,
      color: COLORS[i % COLORS.length],
      points: pts((s) => memory((s.workers || []).filter((w) => w.slot === slot).pop())),
    }));
    if (samples.some((s) => (s.preloaders || []).length)) {
      memorySeries.push({
        name: 'preloader',
        color: '#24292f',
        points: pts((s) => memory((s.preloaders || [])[(s.preloaders || []).length - 1])),
      });
    }
    const lastSample = samples[samples.length - 1];
    const memoryNow = (lastSample.workers || []).reduce((sum, w) => sum + (memory(w) || 0), 0);
    return [
      { key: 'requests', title: 'Requests', unit: 'rate',
        series: [{ name: 'requests', color: COLORS[0], points: pts((s) => s.requests_per_second) }] },
      { key: 'latency', title: 'Latency', unit: 'seconds',
        nowText: ([p50, p99]) => (p50 === null ? '–' : 'p50 ' + FORMAT.seconds(p50) + ' · p99 ' + FORMAT.seconds(p99)),
        series: [
          { name: 'p50', color: COLORS[0], points: pts((s) => s.p50_seconds) },
          { name: 'p99', color: COLORS[4], points: pts((s) => s.p99_seconds) },
        ] },
      { key: 'errors', title: '5xx answers', unit: 'rate',
        series: [{ name: '5xx', color: COLORS[1], points: pts((s) => s.errors_per_second) }] },
      { key: 'in_flight', title: 'In flight', unit: 'count',
        series: [{ name: 'in flight', color: COLORS[2], points: pts((s) => s.in_flight) }] },
      { key: 'restarts', title: 'Restarts per 5 s, by reason', unit: 'count', bars: true,
        nowText: () => samples.reduce((sum, s) => sum + Object.values(s.restarts || {}).reduce((a, b) => a + b, 0), 0) + ' in view',
        series: reasons.length
          ? reasons.map((r, i) => ({ name: r, color: COLORS[(i + 1) % COLORS.length], points: pts((s) => (s.restarts || {})[r] || 0) }))
          : [{ name: 'none', color: COLORS[8], points: pts(() => 0) }] },
      { key: 'memory', title: 'Memory per worker (PSS)', unit: 'bytes',
        nowText: () => 'workers ' + FORMAT.bytes(memoryNow), series: memorySeries },
    ];
  }

  function renderCharts() {
    const root = $('charts');
    if (!root) return;
    const wanted = new Set(poolOrder);
    for (const section of Array.from(root.querySelectorAll('section.pool-charts'))) {
      if (!wanted.has(section.dataset.pool)) section.remove();
    }
    const note = root.querySelector('p.collecting');
    const any = poolOrder.some((p) => (history.get(p) || []).length);
    if (!any) {
      if (!note) root.append(node('p', 'collecting', 'Charts appear with the first sample (every 5 s; the last 15 minutes are kept).'));
      return;
    }
    if (note) note.remove();
    for (const pool of poolOrder) {
      const samples = history.get(pool) || [];
      let section = Array.from(root.querySelectorAll('section.pool-charts')).find((s) => s.dataset.pool === pool);
      if (!section) {
        section = node('section', 'pool-charts');
        section.dataset.pool = pool;
        section.append(node('h2', null, 'Pool ' + pool), node('div', 'chart-grid'));
        root.append(section);
      }
      if (!samples.length) continue;
      const t1 = samples[samples.length - 1].at_unix;
      const t0 = t1 - Math.min(WINDOW_S, Math.max(MIN_SPAN_S, t1 - samples[0].at_unix));
      const grid = section.querySelector('div.chart-grid');
      for (const spec of specs(samples)) {
        let fig = grid.querySelector(`figure[data-chart="${spec.key}"]`);
        if (!fig) {
          fig = node('figure', 'chart');
          fig.dataset.chart = spec.key;
          grid.append(fig);
        }
        drawChart(fig, spec, t0, t1);
      }
    }
    document.body.dataset.chartUpdates = String(Number(document.body.dataset.chartUpdates || 0) + 1);
  }

  let historyBusy = false;
  async function pollHistory() {
    if (historyBusy) return;
    historyBusy = true;
    try {
      const url = since === null ? '/status/history' : '/status/history?since=' + since;
      const r = await fetch(url, { cache: 'no-store' });
      if (!r.ok) return;
      const h = await r.json();
      poolOrder = h.pools.map((p) => p.name);
      for (const name of Array.from(history.keys())) if (!poolOrder.includes(name)) history.delete(name);
      for (const p of h.pools) {
        const samples = (history.get(p.name) || []).concat(p.samples);
        const newest = samples.length ? samples[samples.length - 1].at_unix : 0;
        history.set(p.name, samples.filter((s) => s.at_unix > newest - WINDOW_S).slice(-h.keep));
        for (const s of p.samples) since = since === null ? s.at_unix : Math.max(since, s.at_unix);
      }
      renderCharts();
    } catch (e) {
      // forkyard is away; the next round tries again.
    } finally {
      historyBusy = false;
    }
  }

  // ---- Tables and hang dumps

  let refreshBusy = false;
  async function refresh() {
    if (refreshBusy) return;
    refreshBusy = true;
    try {
      const [page, status] = await Promise.all([
        fetch('/', { cache: 'no-store' }).then((r) => (r.ok ? r.text() : null)),
        fetch('/status', { cache: 'no-store' }).then((r) => (r.ok ? r.json() : null)),
      ]);
      if (page !== null) {
        // forkyard's own rendering, escaped; parsed inertly and swapped in whole.
        const doc = new DOMParser().parseFromString(page, 'text/html');
        for (const id of ['live', 'tables']) {
          const fresh = doc.getElementById(id);
          const current = $(id);
          if (fresh && current) current.replaceChildren(...Array.from(fresh.childNodes, (n) => document.importNode(n, true)));
        }
      }
      if (status !== null) renderHangs(status);
    } catch (e) {
      // forkyard is away; the next round tries again.
    } finally {
      refreshBusy = false;
    }
  }

  let refreshSoon = null;
  function scheduleRefresh() {
    if (refreshSoon === null) refreshSoon = setTimeout(() => { refreshSoon = null; refresh(); }, 300);
  }

  // `pools[].hangs` of /status: each a hung request's worker, the requests it had in
  // flight, and its stack dump.
  function renderHangs(status) {
    const section = $('hangs');
    const list = $('hang-list');
    if (!section || !list) return;
    const all = [];
    for (const p of status.pools || []) for (const h of p.hangs || []) all.push([p.name, h]);
    section.hidden = all.length === 0;
    list.replaceChildren();
    for (const [pool, h] of all.reverse()) {
      const article = node('article', 'hang');
      const when = h.at_unix ? new Date(h.at_unix * 1000).toLocaleTimeString() : '';
      article.append(node('h3', null,
        `${pool} worker ${h.worker} (pid ${h.pid}): ${h.method || ''} ${h.path || ''} hung ${num(Number(h.age_seconds || 0))} s` +
        (when ? `, at ${when}` : '')));
      const facts = [];
      if (h.request_id) facts.push('request id ' + h.request_id);
      if (h.dump_result) facts.push('dump: ' + h.dump_result);
      facts.push(h.killed ? 'the worker was killed' : 'the worker was not killed');
      article.append(node('p', 'muted', facts.join(' · ')));
      const inFlight = h.in_flight || [];
      if (inFlight.length) {
        const table = node('table');
        const head = node('tr');
        for (const c of ['method', 'path', 'request id', 'age']) head.append(node('th', null, c));
        table.append(head);
        for (const r of inFlight) {
          const row = node('tr');
          row.append(node('td', null, r.method), node('td', null, r.path), node('td', null, r.request_id || '-'),
            node('td', 'num', num(Number(r.age_seconds || 0)) + ' s'));
          table.append(row);
        }
        article.append(table);
      }
      if (h.dump) article.append(node('pre', null, h.dump));
      list.append(article);
    }
  }

  // ---- Live events

  const SKIP = new Set(['timestamp', 'level', 'message', 'target', 'event']);

  function addEvent(name, data) {
    const log = $('event-log');
    if (!log) return;
    const li = node('li', 'lvl-' + String(data.level || 'info').toLowerCase());
    li.append(node('span', 't', String(data.timestamp || '').slice(11, 19)));
    li.append(node('span', 'e', name));
    const fields = [];
    for (const [k, v] of Object.entries(data)) {
      if (!SKIP.has(k)) fields.push(k + '=' + (typeof v === 'string' && !/[\s"=]/.test(v) && v !== '' ? v : JSON.stringify(v)));
    }
    li.append(document.createTextNode(fields.join(' ')));
    if (data.message) li.append(node('span', 'm', data.message));
    li.title = JSON.stringify(data);
    log.prepend(li);
    while (log.children.length > MAX_EVENTS) log.lastChild.remove();
  }

  function followEvents() {
    const state = $('events-state');
    if (!window.EventSource || !state) return;
    const source = new EventSource('/events?replay=100');
    const onEvent = (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      addEvent(e.type, data);
      scheduleRefresh();
    };
    for (const name of EVENT_NAMES) source.addEventListener(name, onEvent);
    source.addEventListener('end', () => {
      state.textContent = '· forkyard stopped';
      source.close();
    });
    source.onopen = () => { state.textContent = '· live'; };
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) state.textContent = '· reconnecting…';
    };
  }

  // For the test suite, which renders a hang report the way /status will carry it.
  window.forkyardPage = { renderHangs };

  function start() {
    pollHistory();
    setInterval(pollHistory, HISTORY_MS);
    setInterval(refresh, REFRESH_MS);
    followEvents();
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
