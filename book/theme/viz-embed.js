// Fits each embedded visualizer frame to its page: the page (viz.js) posts
// its height whenever it changes, so the frame never hides the page's
// lower part behind an inner scrollbar. Works when the book is opened from
// disk too (postMessage crosses file:// origins).
window.addEventListener('message', (e) => {
  const h = e.data && e.data.vizHeight;
  if (typeof h !== 'number' || !(h > 100 && h < 5000)) return;
  for (const f of document.querySelectorAll('iframe.viz')) {
    if (f.contentWindow === e.source) f.style.height = `${Math.ceil(h) + 4}px`;
  }
});
