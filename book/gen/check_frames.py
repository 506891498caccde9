#!/usr/bin/env python3
"""Checks the built book as a reader opens it: from disk (file://), in
headless Chromium (through viz-wasm/tools/cdp.mjs).

- Every chapter with an embedded visualizer: the frame's page starts and
  reports its height, so the frame is resized to fit it (no inner
  scrollbar). A page that cannot start from disk never reports.
- Every tour: opened alone from disk, each stop's caption shows at its
  event, reached with `]` from the stop before.

Run after `mdbook build book` (.ci/run does): python3 book/gen/check_frames.py
"""
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
OUT = os.path.join(ROOT, 'book', 'book')
CDP = os.path.join(ROOT, 'viz-wasm', 'tools', 'cdp.mjs')


def cdp(url, steps, size='1000,900'):
    p = subprocess.run(['node', '--experimental-websocket', '--no-warnings', CDP, url, *steps],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, 'CDP_WINDOW': size, 'CDP_WAIT_MS': '30000'})
    if p.returncode != 0 or 'page exception' in p.stderr:
        sys.exit(f'{url}: {p.stderr.strip()}')
    return [json.loads(l) for l in p.stdout.splitlines()]


def main():
    tours = sorted(glob.glob(os.path.join(OUT, 'tours', '*.js')))
    if not tours:
        sys.exit(f'no tours in {OUT}/tours: build the book first')
    chapters = [p for p in sorted(glob.glob(os.path.join(OUT, '*.html')))
                if 'class="viz"' in open(p).read() and not p.endswith('print.html')]
    if not chapters:
        sys.exit('no chapter embeds the visualizer')
    for page in chapters:
        frames = open(page).read().count('<iframe class="viz"')
        # Bring each (lazy) frame into view; each must fit itself to its page.
        out = cdp('file://' + page, [
            f"wait:document.querySelectorAll('iframe.viz').length === {frames}",
            "eval:document.querySelectorAll('iframe.viz').forEach((f) => f.loading = 'eager')",
            "wait:[...document.querySelectorAll('iframe.viz')].every((f) => f.style.height)",
            "print:[...document.querySelectorAll('iframe.viz')].map((f) => f.style.height)",
        ])
        if len(out[0]) != frames:
            sys.exit(f'{page}: {frames} frames in the HTML, {len(out[0])} in the page')
        print(f'{os.path.basename(page)}: {frames} frame(s) fitted to {out[0]}')
    for path in tours:
        text = open(path).read()
        tour = json.loads(text[text.index('vizTour(') + len('vizTour('):text.rindex(');')])
        name = os.path.basename(path)
        url = f'file://{OUT}/viz/index.html?tour=../tours/{name}&speed=100'
        cap = "document.getElementById('caption').textContent"
        status = "document.getElementById('status').textContent"
        steps = ["wait:document.getElementById('viz').dataset.stop === '1'", f'print:[{cap}, {status}]']
        for k in range(2, len(tour['stops']) + 1):
            steps += ['key:]', f"wait:document.getElementById('viz').dataset.stop === '{k}'",
                      f'print:[{cap}, {status}]']
        out = cdp(url, steps)
        for k, (stop, (caption, st)) in enumerate(zip(tour['stops'], out)):
            if caption != stop['caption'] or not st.startswith(f"event {stop['at']} / "):
                sys.exit(f'{name} stop {k + 1}: page shows {caption!r} at {st!r}, '
                         f"the tour says {stop['caption']!r} at event {stop['at']}")
        print(f'{name}: {len(out)} stops, each caption at its event')


if __name__ == '__main__':
    main()
