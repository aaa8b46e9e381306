"""The documents and the code point at each other correctly.

README's table of the papers' blocks names classes and functions that its files
define; every `docs/*.md` the code cites exists and has the section cited; every
repository path README and docs/ mention exists.
"""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
  with open(os.path.join(ROOT, path), encoding='utf-8') as f:
    return f.read()


def _block_rows():
  """(files, names) of each row of README's "The blocks of the papers' figures" table."""
  text = _read('README.md').split("The blocks of the papers' figures", 1)[1]
  rows = []
  for line in text.split('\n\n', 2)[1].splitlines()[2:]:
    _, files, names = (cell.strip() for cell in line.strip('|').split('|'))
    files = re.findall(r'`([^`]+)`', files)
    folder = os.path.dirname(files[0])
    rows.append(([os.path.join(folder, f) if '/' not in f else f for f in files],
                 re.findall(r'`([^`]+)`', names)))
  return rows


def test_readme_block_table_names_what_its_files_define():
  rows = _block_rows()
  assert len(rows) >= 8
  for files, names in rows:
    source = '\n'.join(_read(f) for f in files)
    for name in names:
      assert re.search(rf'^(class|def) {name}\b', source, re.M), (name, files)


def _citations():
  """(citing file, docs file, section number or None) of every docs/ citation in code."""
  found = []
  for path in glob.glob(os.path.join(ROOT, '**', '*.py'), recursive=True):
    text = open(path, encoding='utf-8').read()
    for match in re.finditer(r'docs/(\w+\.md)(?:,?\s+sections?\s+(\d+))?', text):
      found.append((os.path.relpath(path, ROOT), match.group(1), match.group(2)))
  return found


def test_cited_documents_and_sections_exist():
  citations = _citations()
  assert len(citations) > 50
  for citing, doc, section in citations:
    path = os.path.join('docs', doc)
    assert os.path.exists(os.path.join(ROOT, path)), (citing, path)
    if section:
      assert re.search(rf'^## {section}\. ', _read(path), re.M), (citing, doc, section)


@pytest.mark.parametrize('doc', ['README.md'] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md'))))
def test_paths_the_documents_mention_exist(doc):
  for path in re.findall(
      r'\b((?:fanet_jax|input_pipeline|tests|experiments|scripts|docs)/[\w/.*{},-]*[\w*}])', _read(doc)):
    if any(ch in path for ch in '*{'):
      continue
    assert os.path.exists(os.path.join(ROOT, path)), (doc, path)
