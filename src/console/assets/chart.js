// A stacked bar chart of allowed / denied / failed requests per time bucket,
// drawn as SVG with DOM calls (no library, no inline style: colours come from
// classes in style.css). Values are placed with textContent.

import { svg, clear, visible } from './dom.js';
import { t } from './i18n.js';

const W = 640;
const H = 220;
const PAD = { left: 44, right: 10, top: 12, bottom: 30 };
const KINDS = ['allow', 'deny', 'error'];

/** A readable time label for a bucket start (ms since epoch). */
function label(ms, spanMs) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, '0');
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  if (spanMs <= 36 * 3600e3) return hm;
  return `${two(d.getMonth() + 1)}-${two(d.getDate())}${spanMs <= 7 * 86400e3 ? ` ${hm}` : ''}`;
}

/** 1, 2 or 5 times a power of ten, at least `x`. */
function niceCeil(x) {
  if (x <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** Draws `stats.buckets` into `host` (replacing what was there). */
export function drawChart(host, stats) {
  clear(host);
  const buckets = stats.buckets || [];
  const root = svg('svg', {
    viewBox: `0 0 ${W} ${H}`,
    class: 'chart-svg',
    role: 'img',
    'aria-label': t('chart.label'),
    preserveAspectRatio: 'xMidYMid meet',
  });
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const max = niceCeil(Math.max(0, ...buckets.map((b) => b.allow + b.deny + b.error)));
  // Grid and y labels.
  for (const frac of [0, 0.5, 1]) {
    const y = PAD.top + plotH - frac * plotH;
    root.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: 'grid' }));
    root.append(svg('text', { x: PAD.left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, String(Math.round(frac * max))));
  }
  if (buckets.length === 0) {
    root.append(svg('text', { x: W / 2, y: H / 2, class: 'axis empty', 'text-anchor': 'middle' }, t('chart.empty')));
    host.append(root);
    return;
  }
  const slot = plotW / buckets.length;
  const barW = Math.max(1, Math.min(28, slot * 0.75));
  const first = Date.parse(buckets[0].start);
  const last = Date.parse(buckets[buckets.length - 1].start);
  const span = last - first + (stats.bucket_secs || 0) * 1000;
  const every = Math.max(1, Math.ceil(buckets.length / 6));
  buckets.forEach((b, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    let y = PAD.top + plotH;
    const g = svg('g', { class: 'bucket', 'data-start': b.start });
    for (const k of KINDS) {
      const v = b[k] || 0;
      if (v === 0) continue;
      const h = (v / max) * plotH;
      y -= h;
      g.append(svg('rect', { x, y, width: barW, height: Math.max(h, 0.5), class: `bar ${k}` }));
    }
    const when = new Date(Date.parse(b.start)).toLocaleString();
    g.append(svg('title', {}, `${when}\n${t('d.allow')} ${b.allow}  ${t('d.deny')} ${b.deny}  ${t('d.error')} ${b.error}`));
    // A transparent full-height target so thin bars still show their title.
    g.prepend(svg('rect', { x: PAD.left + i * slot, y: PAD.top, width: slot, height: plotH, class: 'hit' }));
    root.append(g);
    if (i % every === 0) {
      root.append(
        svg('text', { x: x + barW / 2, y: H - PAD.bottom + 16, class: 'axis', 'text-anchor': 'middle' }, label(Date.parse(b.start), span)),
      );
    }
  });
  host.append(root);
}

/** Fills an `<ol>` with labelled horizontal bars (`[{name, count}]`). */
export function drawTop(list, items) {
  clear(list);
  if (!items || items.length === 0) {
    const li = document.createElement('li');
    li.className = 'none';
    li.textContent = t('top.none');
    list.append(li);
    return;
  }
  const max = Math.max(...items.map((i) => i.count));
  for (const it of items) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'name';
    name.append(visible(it.name));
    name.title = name.textContent;
    const count = document.createElement('span');
    count.className = 'count';
    count.textContent = String(it.count);
    const track = document.createElement('span');
    track.className = 'track';
    const fill = document.createElement('span');
    fill.className = 'fill';
    // CSSOM, not a style attribute: allowed by the CSP.
    fill.style.width = `${Math.max(2, (it.count / max) * 100)}%`;
    track.append(fill);
    li.append(name, track, count);
    list.append(li);
  }
}
