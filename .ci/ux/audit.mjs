// Lighthouse and axe on the storefront's main pages, in Debian's Chromium.
//
//   node .ci/ux/audit.mjs http://127.0.0.1:PORT [report-dir]
//
// Audits home, a category, a product, search results, the cart (with an item
// in it) and checkout. Passes only when Accessibility, Best Practices and SEO
// score 100 on the public pages (the cart and checkout are kept out of search
// engines, so SEO is not asked of them there), and axe finds no violation on
// any of the six, at desktop and at phone size. Every request the browser
// makes must stay on this machine. Reports land in report-dir.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

import lighthouse from 'lighthouse';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const base = (process.argv[2] || '').replace(/\/$/, '');
const reports = process.argv[3] || 'target/lighthouse';
if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(base)) {
  console.error('usage: node .ci/ux/audit.mjs http://127.0.0.1:PORT [report-dir] (a shop on this machine)');
  process.exit(2);
}
fs.mkdirSync(reports, { recursive: true });

const GATED = ['accessibility', 'best-practices', 'seo'];
const VIEWPORTS = { desktop: { width: 1280, height: 900 }, phone: { width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 2 } };

const loopback = (url) => {
  try {
    const u = new URL(url);
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) return true; // data:, blob:, chrome:, about:
    return ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
  } catch {
    return true;
  }
};

const browser = await puppeteer.launch({
  executablePath: process.env.CHROME_PATH || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--disable-extensions',
    // Nothing but the shop resolves: a stray link to the outside fails instead of leaving the machine.
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
  ],
});

const problems = [];
const external = new Set();
const summary = [];

try {
  const page = await browser.newPage();
  page.on('request', (r) => { if (!loopback(r.url())) external.add(r.url()); });
  page.setDefaultNavigationTimeout(30_000);

  const links = async (prefix) => page.$$eval(`a[href^="${prefix}"]`, (as) => [...new Set(as.map((a) => a.getAttribute('href')))]);

  // Find the pages: a category and products from the home page.
  let res = await page.goto(`${base}/`, { waitUntil: 'load' });
  if (!res || res.status() !== 200) throw new Error(`the home page answered ${res && res.status()}`);
  const categories = await links('/categories/');
  let products = await links('/products/');
  if (categories.length === 0) throw new Error('the home page links to no category');
  await page.goto(`${base}${categories[0]}`, { waitUntil: 'load' });
  products = [...new Set([...products, ...(await links('/products/'))])].filter((p) => !p.includes('/notify-me'));
  if (products.length === 0) throw new Error('neither the home page nor a category links to a product');

  // Put something in the cart through the storefront's own form, as a shopper
  // does; a product whose form cannot be sent as shown is skipped (and named).
  let product = null;
  for (const p of products.slice(0, 12)) {
    await page.goto(`${base}${p}`, { waitUntil: 'load' });
    const form = await page.$('form[action="/cart/items"]');
    if (!form) continue;
    const nav = page.waitForNavigation({ waitUntil: 'load' }).catch(() => null);
    await form.evaluate((f) => (f.requestSubmit ? f.requestSubmit() : f.submit()));
    const answer = await nav;
    await page.goto(`${base}/cart`, { waitUntil: 'load' });
    const filled = await page.$('a[href="/checkout"], form[action^="/cart/items/"]');
    if (filled) {
      product = p;
      break;
    }
    console.log(`note: adding ${p} to the cart did not work (${answer ? answer.status() : 'no answer'}); trying another product`);
  }
  if (!product) throw new Error('no product could be put in the cart through its page');

  // A search for the product's first word: results, not an empty page.
  await page.goto(`${base}${product}`, { waitUntil: 'load' });
  const heading = await page.$eval('h1', (h) => h.textContent.trim()).catch(() => '');
  const word = (heading.split(/\s+/).find((w) => /^[\p{L}]{3,}$/u.test(w)) || 'a').toLowerCase();

  const pages = [
    { name: 'home', path: '/', public: true },
    { name: 'category', path: categories[0], public: true },
    { name: 'product', path: product, public: true },
    { name: 'search', path: `/search?q=${encodeURIComponent(word)}`, public: true },
    { name: 'cart', path: '/cart', public: false, shows: 'a[href="/checkout"], form[action^="/cart/items/"]' },
    { name: 'checkout', path: '/checkout', public: false },
  ];

  for (const p of pages) {
    const url = `${base}${p.path}`;
    console.log(`\n--- ${p.name}: ${p.path}`);
    const gated = p.public ? GATED : GATED.filter((c) => c !== 'seo');

    // Lighthouse, keeping the cart's cookie (no storage reset).
    const run = await lighthouse(url, {
      output: ['json', 'html'],
      logLevel: 'error',
      onlyCategories: ['accessibility', 'best-practices', 'seo', 'performance'],
      disableStorageReset: true,
    }, undefined, page);
    if (!run || !run.lhr) throw new Error(`lighthouse gave no result for ${url}`);
    const { lhr } = run;
    fs.writeFileSync(path.join(reports, `${p.name}.report.json`), run.report[0]);
    fs.writeFileSync(path.join(reports, `${p.name}.report.html`), run.report[1]);
    if (lhr.runtimeError) problems.push(`${p.name}: lighthouse could not audit the page: ${lhr.runtimeError.code} ${lhr.runtimeError.message}`);
    if (new URL(lhr.finalDisplayedUrl).pathname !== new URL(url).pathname) {
      problems.push(`${p.name}: ${p.path} ended at ${lhr.finalDisplayedUrl}`);
    }
    const scores = {};
    for (const [id, cat] of Object.entries(lhr.categories)) {
      scores[id] = cat.score === null ? null : Math.round(cat.score * 100);
      const failing = cat.auditRefs
        .map((ref) => ({ ref, audit: lhr.audits[ref.id] }))
        .filter(({ audit }) => audit && audit.score !== null && audit.score < 1 && !['notApplicable', 'manual', 'informative'].includes(audit.scoreDisplayMode));
      const isGated = gated.includes(id);
      if (isGated && scores[id] !== 100) problems.push(`${p.name}: ${cat.title} ${scores[id]} (needs 100)`);
      for (const { ref, audit } of failing) {
        if (id === 'performance' && ref.weight === 0) continue;
        const items = (audit.details && audit.details.items) || [];
        const where = items.slice(0, 5).map((it) => {
          const n = it.node || (it.subItems && it.subItems.items && it.subItems.items[0] && it.subItems.items[0].node);
          return n ? (n.selector || n.snippet) : (it.url || it.source?.url || it.description || '');
        }).filter(Boolean);
        const line = `  ${isGated ? 'FAIL' : 'note'} ${cat.title} · ${audit.id} (${audit.title}; weight ${ref.weight})${audit.displayValue ? ` — ${audit.displayValue}` : ''}${where.length ? `\n        at ${where.join('\n        at ')}` : ''}`;
        console.log(line);
        if (isGated && ref.weight > 0) problems.push(`${p.name}: ${cat.title} · ${audit.id}: ${audit.title}`);
      }
    }
    for (const r of (lhr.audits['network-requests']?.details?.items || [])) {
      if (!loopback(r.url)) external.add(r.url);
    }
    console.log(`  scores: ${Object.entries(scores).map(([k, v]) => `${k} ${v}`).join(', ')}`);

    // axe, at desktop and at phone size, on a fresh tab with the same cookies.
    const found = [];
    for (const [size, viewport] of Object.entries(VIEWPORTS)) {
      const tab = await browser.newPage();
      tab.on('request', (r) => { if (!loopback(r.url())) external.add(r.url()); });
      await tab.setViewport(viewport);
      res = await tab.goto(url, { waitUntil: 'load' });
      if (!res || res.status() !== 200) problems.push(`${p.name} (${size}): ${p.path} answered ${res && res.status()}`);
      if (p.shows && !(await tab.$(p.shows))) problems.push(`${p.name} (${size}): the page lost what it is audited with (${p.shows})`);
      // Evaluated through the DevTools protocol, which the page's CSP does not govern.
      await tab.evaluate(axeSource);
      const result = await tab.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
      for (const v of result.violations) {
        const nodes = v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}${n.failureSummary ? ` — ${n.failureSummary.replace(/\s+/g, ' ').trim()}` : ''}`);
        found.push(v.id);
        console.log(`  FAIL axe (${size}) · ${v.id} [${v.impact}] ${v.help} (${v.nodes.length} element${v.nodes.length === 1 ? '' : 's'})\n        at ${nodes.join('\n        at ')}`);
        problems.push(`${p.name} (${size}): axe ${v.id}: ${v.help}`);
      }
      await tab.close();
    }
    summary.push({ name: p.name, path: p.path, ...scores, axe: found.length });
  }
} finally {
  await browser.close();
}

for (const url of external) problems.push(`a request left this machine: ${url}`);

console.log('\npage       a11y  best  seo  perf  axe  path');
for (const s of summary) {
  const c = (v) => String(v ?? '–').padStart(4);
  console.log(`${s.name.padEnd(9)} ${c(s.accessibility)}  ${c(s['best-practices'])} ${c(s.seo)}  ${c(s.performance)} ${c(s.axe)}  ${s.path}`);
}
console.log(`(reports in ${reports}/)`);
if (problems.length) {
  console.error(`\nux audit: ${problems.length} problem${problems.length === 1 ? '' : 's'}:`);
  for (const p of problems) console.error(`  - ${p}`);
  process.exit(1);
}
console.log('\nux audit: Accessibility, Best Practices and SEO at 100, and no axe violation, on every audited page');
