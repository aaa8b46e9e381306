"""A headless Chromium for the tests of the HTML report: load a page from the file
system, see which of its images loaded and what it wrote to the console, take a
screenshot.

The report has no script, so the page is loaded as a copy beside it (`.probe.html`,
removed afterwards) with one added script that records, once the page has loaded,
every image's source and whether it decoded (`complete` and `naturalWidth > 0`) in
an attribute of the body, which `--dump-dom` prints. Console messages come from
Chromium's own log (`--enable-logging=stderr`: lines with `:CONSOLE`). As root,
Chromium runs only with `--no-sandbox`.
"""
import html
import json
import os
import re
import shutil
import subprocess

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
_PROBE = """<script>
window.addEventListener('load', () => {
  document.body.setAttribute('data-probe', JSON.stringify(Array.from(document.images,
      image => [image.getAttribute('src'), image.complete && image.naturalWidth > 0])));
});
</script>"""


def find() -> str | None:
  """The path of a Chromium-like browser on PATH, or None."""
  return next(filter(None, map(shutil.which, BROWSERS)), None)


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu',
                         '--hide-scrollbars', *args], capture_output=True, text=True,
                        timeout=120, check=True)


def load(browser: str, page: str) -> tuple[list[tuple[str, bool]], list[str]]:
  """([(image source, loaded)], console lines) of `page` opened from the file system."""
  with open(page, encoding='utf-8') as f:
    text = f.read()
  probe = os.path.join(os.path.dirname(page), '.probe.html')
  with open(probe, 'w', encoding='utf-8') as f:
    f.write(text.replace('</body>', _PROBE + '</body>'))
  try:
    done = _run(browser, '--virtual-time-budget=10000', '--enable-logging=stderr',
                '--v=0', '--dump-dom', 'file://' + os.path.abspath(probe))
  finally:
    os.remove(probe)
  found = re.search(r'data-probe="([^"]*)"', done.stdout)
  images = [tuple(item) for item in json.loads(html.unescape(found.group(1)))] if found \
      else []
  console = [line for line in done.stderr.splitlines() if ':CONSOLE' in line]
  return images, console


def screenshot(browser: str, page: str, path: str, size=(1280, 1400)) -> None:
  """Saves a PNG of the top `size` (width, height) of `page`."""
  _run(browser, f'--window-size={size[0]},{size[1]}', f'--screenshot={path}',
       'file://' + os.path.abspath(page))
