// imgclean collect_urls.js: save the full-size image URLs of an image-search results page as urls_<query>.csv
//
// 1. Search images on DuckDuckGo, Bing or Google (e.g. "grizzly bear") and scroll until enough results are loaded.
// 2. Open the browser console (F12 or Ctrl+Shift+J / Cmd+Opt+J), paste this whole file, press Enter.
//    (Or use imgclean/assets/bookmarklet.txt as a bookmark's URL and click it on the results page.)
// 3. A file urls_grizzly_bear.csv is downloaded: one URL per line, no header, duplicates and data: URLs removed.
// 4. `imgclean download urls_grizzly_bear.csv DEST --label grizzly`, or put several urls_<class>.csv files in one
//    folder and run `imgclean download URLS_FOLDER DEST` (the class is taken from each file name).
// Where it looks: Bing's `a.iusc[m]` JSON (murl), Google's embedded ["https://...", height, width] data and
// /imgres?imgurl= links, DuckDuckGo's detail links and proxied `external-content.duckduckgo.com/iu/?u=` URLs;
// then any link or data-* attribute that points at an image file. Thumbnails (gstatic, bing tse*, ddg proxies
// of thumbnails) are used only when nothing else is found, with a warning.
(() => {
  const IMG = /\.(jpe?g|png|gif|webp|bmp|tiff?|avif)$/i;  // tested on URL paths
  const THUMB = /(encrypted-tbn\d*\.gstatic\.com|\.gstatic\.com\/images|tse\d*\.(mm\.)?bing\.net|\/th\?id=|\/th\/id\/)/i;
  const full = new Set(), thumbs = new Set();
  const clean = (u) => {
    if (!u || typeof u !== 'string') return null;
    u = u.trim();
    if (u.startsWith('//')) u = location.protocol + u;
    if (!/^https?:\/\//i.test(u)) return null;  // skips data:, blob:, javascript: and relative junk
    try { return new URL(u).href; } catch (e) { return null; }
  };
  // kind: 'full' (a known full-size URL), 'link' (kept only if it looks like an image file), 'thumb'
  const add = (u, kind = 'full') => {
    u = clean(u);
    if (!u) return;
    const url = new URL(u);
    for (const k of ['imgurl', 'mediaurl', 'u', 'url', 'image_url', 'img_url']) {  // unwrap redirects and proxies
      const v = clean(url.searchParams.get(k));
      if (v && v !== u && (IMG.test(new URL(v).pathname) || k === 'imgurl' || k === 'mediaurl')) {
        return add(v, kind === 'thumb' ? 'thumb' : 'full');
      }
    }
    if (kind === 'link' && !IMG.test(url.pathname)) return;
    (kind === 'thumb' || THUMB.test(u) ? thumbs : full).add(u);
  };
  // Bing: every result anchor carries JSON with the media URL
  document.querySelectorAll('a.iusc[m], a[m*="murl"]').forEach((a) => {
    try { add(JSON.parse(a.getAttribute('m')).murl); } catch (e) { /* malformed */ }
  });
  // Google: full-size URLs sit in the page's data as ["https://...jpg",height,width]
  const html = document.documentElement.innerHTML;
  for (const m of html.matchAll(/\["(https?:\/\/[^"]+?)",(\d+),(\d+)\]/g)) {
    let u = m[1];
    try { u = JSON.parse('"' + u + '"'); } catch (e) { /* keep as is */ }
    if (!THUMB.test(u)) add(u);
  }
  // Links whose target is an image, or that carry it as imgurl= / mediaurl= / u= (Google, Bing, DuckDuckGo)
  document.querySelectorAll('a[href]').forEach((a) => {
    add(a.href, 'link');
  });
  // Full-size URL attributes used by result grids and lazy loaders
  const attrs = ['data-full', 'data-full-src', 'data-original', 'data-large', 'data-src-full', 'data-murl', 'data-iurl', 'data-src'];
  document.querySelectorAll(attrs.map((a) => '[' + a + ']').join(',')).forEach((el) => {
    for (const a of attrs) { const v = el.getAttribute(a); if (v) add(v, a === 'data-src' ? 'link' : 'full'); }
  });
  // Last resort: the thumbnails themselves (still better than nothing for a quick experiment)
  document.querySelectorAll('img[src]').forEach((img) => add(img.getAttribute('src'), 'thumb'));
  let urls = [...full];
  if (!urls.length) {
    urls = [...thumbs];
    console.warn('imgclean: no full-size image URLs found on this page; saving ' + urls.length + ' thumbnail URLs instead');
  }
  if (!urls.length) { console.warn('imgclean: no image URLs found: run this on an image-search results page'); return; }
  const q = new URLSearchParams(location.search).get('q') || new URLSearchParams(location.search).get('query') || document.title || 'images';
  const name = 'urls_' + (q.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '') || 'images') + '.csv';
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([urls.join('\n') + '\n'], { type: 'text/csv' }));
  a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
  console.log('imgclean: saved ' + urls.length + ' image URLs to ' + name);
})();
