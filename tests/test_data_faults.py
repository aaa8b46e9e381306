"""Faults in the manual data sets' folders (docs/data.md section 1, Faults): each is
injected into a small fixture and must fail in one `DataError` line naming the file.

ZeroWaste-f and InterSegHands fixtures hold 8x6 frames. Covered: a dangling
symbolic link, a folder named like an image, a file without read permission, a file
name that is not UTF-8, frames of the wrong kind (16 bits, alpha), a manual folder
edited after preparation, and a preparation killed half-way.
"""
import fcntl
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
from PIL import Image
import pytest

from input_pipeline import builders
from input_pipeline import datasets
from input_pipeline import image_files
from input_pipeline import interseg
from input_pipeline import zerowaste
from input_pipeline.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = {'train': 3, 'val': 1, 'test': 1}
# Data set -> (its TITLE, image folder, label folder).
LAYOUTS = {
    'zero_waste_f': ('ZeroWaste-f', zerowaste.IMAGE_DIR, zerowaste.LABEL_DIR),
    'inter_seg_hands': ('InterSegHands', interseg.DEPTH_DIR, interseg.MASK_DIR),
}


def _write(root, name, seed=0):
  """Writes an 8x6 fixture of data set `name` under `root`; returns `root` as str."""
  rng = np.random.default_rng(seed)
  _, image_dir, label_dir = LAYOUTS[name]
  for split, count in FRAMES.items():
    os.makedirs(root / split / image_dir)
    os.makedirs(root / split / label_dir)
    for index in range(count):
      if name == 'zero_waste_f':
        image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        label = rng.choice(np.array([0, 1, 2, 3, 4, 255], np.uint8), (6, 8))
      else:
        image = rng.integers(0, 65536, (6, 8), dtype=np.uint16)
        label = rng.choice(np.array([0, 1, 2, 255], np.uint8), (6, 8))
      Image.fromarray(image).save(root / split / image_dir / f'{split}_{index:03d}.png')
      Image.fromarray(label).save(root / split / label_dir / f'{split}_{index:03d}.png')
  return str(root)


def _load(data_dir, name, manual_dir, split='train'):
  return datasets.load_source(name, split, data_dir=str(data_dir), manual_dir=manual_dir)


def _examples(data_dir, name):
  """Every example of every split of a prepared data set."""
  return {split: [_load(data_dir, name, None, split)[i]
                  for i in range(FRAMES[split])] for split in FRAMES}


def _assert_same(first, second):
  for split in FRAMES:
    for a, b in zip(first[split], second[split], strict=True):
      assert a['file_name'] == b['file_name']
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])


def _fails_before_writing(tmp_path, name, manual_dir, message):
  """`load_source` raises `message` (a regex) and writes nothing into the data dir."""
  with pytest.raises(DataError, match=message) as raised:
    _load(tmp_path / 'tfds', name, manual_dir)
  assert '\n' not in str(raised.value)
  assert not (tmp_path / 'tfds').exists() or not os.listdir(tmp_path / 'tfds')


@pytest.mark.parametrize('name', sorted(LAYOUTS))
@pytest.mark.parametrize('folder', [1, 2])  # LAYOUTS index: the image or label folder
@pytest.mark.parametrize('fault', ['dangling_link', 'directory', 'permission'])
def test_unreadable_file_is_named(tmp_path, monkeypatch, name, folder, fault):
  root = _write(tmp_path / 'manual', name)
  path = os.path.join(root, 'train', LAYOUTS[name][folder], 'train_001.png')
  if fault == 'dangling_link':
    os.remove(path)
    os.symlink(os.path.join(root, 'missing.png'), path)
    message = (f'{path}: a symbolic link to {os.path.realpath(root)}/missing.png, which '
               'does not exist; restore that file or remove the link.')
  elif fault == 'directory':
    path = path.replace('train_001', 'x')
    os.mkdir(path)
    message = f'{path}: is a directory, not an image file; move it out of'
  else:
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
      # Root reads a file whatever its mode bits: refuse the opening of this one path
      # instead, as the kernel would for another user.
      def denying_open(file, *args, **kwargs):
        if os.fspath(file) == path:
          raise PermissionError(13, 'Permission denied', file)
        return open(file, *args, **kwargs)
      monkeypatch.setattr(image_files, 'open', denying_open, raising=False)
    message = (f'{path}: cannot be read (permission denied); make it readable or '
               'remove it.')
  _fails_before_writing(tmp_path, name, root, re.escape(message))


def test_a_read_that_fails_names_the_file(tmp_path, monkeypatch):
  # A file that passed the layout check but fails on reading (gone, denied meanwhile).
  root = _write(tmp_path / 'manual', 'zero_waste_f')
  image = os.path.join(root, 'train', 'data', 'train_000.png')
  label = os.path.join(root, 'train', 'sem_seg', 'train_000.png')
  os.remove(label)
  with pytest.raises(DataError, match=re.escape(
      f'{label}: cannot be read (no such file or directory); make it readable')):
    zerowaste.read_pair(image, label)

  def denying_open(file, *args, **kwargs):
    raise PermissionError(13, 'Permission denied', file)
  monkeypatch.setattr(image_files, 'open', denying_open, raising=False)
  with pytest.raises(DataError, match=re.escape(f'{image}: cannot be read (permission')):
    zerowaste.read_pair(image, label)


@pytest.mark.parametrize('name', sorted(LAYOUTS))
@pytest.mark.parametrize('folder', [1, 2])
def test_file_name_not_utf8(tmp_path, name, folder):
  root = _write(tmp_path / 'manual', name)
  directory = os.path.join(root, 'val', LAYOUTS[name][folder])
  with open(os.path.join(directory, 'val_000.png'), 'rb') as f:
    data = f.read()
  # Linux takes any bytes but '/' and NUL in a file name.
  fd = os.open(os.fsencode(directory) + b'/\xff.png', os.O_WRONLY | os.O_CREAT)
  os.write(fd, data)
  os.close(fd)
  message = (f'{directory}/\\xff.png: the file name is not valid UTF-8; file names must '
             'be UTF-8, since the data set stores them as text: rename the file.')
  _fails_before_writing(tmp_path, name, root, re.escape(message))


def _png_16bit_rgb(image: np.ndarray) -> bytes:
  """A 16-bit RGB PNG, written by hand: PIL cannot write one."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))
  height, width, _ = image.shape
  rows = b''.join(b'\0' + row.astype('>u2').tobytes() for row in image)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 16,
                                                             2, 0, 0, 0))
          + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


@pytest.mark.parametrize('mode, words', [
    ('I;16', "16-bit grey (PIL mode 'I;16')"),
    ('RGBA', "8-bit RGB with alpha (PIL mode 'RGBA')"),
    ('LA', "8-bit grey with alpha (PIL mode 'LA')"),
    ('RGB;16', "16-bit RGB (PIL mode 'RGB')"),  # PIL reads it as 8-bit RGB
])
def test_zerowaste_refuses_lossy_frames(tmp_path, mode, words):
  root = _write(tmp_path / 'manual', 'zero_waste_f')
  path = os.path.join(root, 'train', 'data', 'train_002.png')
  rgb = np.asarray(Image.open(path))
  if mode == 'RGB;16':
    with open(path, 'wb') as f:
      f.write(_png_16bit_rgb(rgb.astype(np.uint16) * 257))
  else:
    Image.fromarray(rgb).convert(mode).save(path)
  message = (f'{path}: image is {words}; expected an 8-bit RGB PNG (8-bit grey and palette '
             'PNGs are converted to RGB, losslessly). Converting this one would lose data: '
             'convert it yourself or remove it.')
  with pytest.raises(DataError, match=re.escape(message)):
    _load(tmp_path / 'tfds', 'zero_waste_f', root)
  assert not datasets.make_builder('zero_waste_f', data_dir=str(tmp_path / 'tfds')
                                   ).is_prepared()


@pytest.mark.parametrize('mode', ['L', 'P'])
def test_zerowaste_converts_grey_and_palette_frames_losslessly(tmp_path, mode):
  root = _write(tmp_path / 'manual', 'zero_waste_f')
  path = os.path.join(root, 'train', 'data', 'train_001.png')
  frame = Image.open(path).convert(mode)  # 'P': the adaptive palette of the frame
  frame.save(path)
  source = _load(tmp_path / 'tfds', 'zero_waste_f', root)
  np.testing.assert_array_equal(source[1]['image'], np.asarray(frame.convert('RGB')))


def test_interseg_refuses_depth_with_alpha(tmp_path):
  root = _write(tmp_path / 'manual', 'inter_seg_hands')
  path = os.path.join(root, 'train', 'depth', 'train_000.png')
  Image.new('RGBA', (8, 6)).save(path)
  with pytest.raises(DataError, match=re.escape(
      f"{path}: depth PNG is 4-channel (PIL mode 'RGBA'); expected a single-channel "
      '16-bit PNG')):
    _load(tmp_path / 'tfds', 'inter_seg_hands', root)


def _edit(root, edit):
  """Edits a prepared ZeroWaste-f fixture; returns the change the error must report."""
  train = os.path.join(root, 'train')
  if edit == 'added_and_changed':
    for folder in ('data', 'sem_seg'):
      shutil.copy(os.path.join(train, folder, 'train_001.png'),
                  os.path.join(train, folder, 'train_003.png'))
    path = os.path.join(train, 'data', 'train_000.png')
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(path)
    stat = os.stat(path)  # A later time, whatever the clock's resolution.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    return '2 files added, 1 changed, e.g. train/data/train_000.png'
  if edit == 'removed':
    shutil.rmtree(os.path.join(root, 'test'))
    return '2 files removed, e.g. test/data/test_000.png'
  if edit == 'touched':  # Same bytes, a new time: the check reads no pixels.
    path = os.path.join(train, 'sem_seg', 'train_002.png')
    os.utime(path, ns=(0, 10**18))
    return '1 file changed, e.g. train/sem_seg/train_002.png'
  raise ValueError(edit)


@pytest.mark.parametrize('edit', ['added_and_changed', 'removed', 'touched'])
def test_manual_dir_edited_after_preparation(tmp_path, edit):
  root = _write(tmp_path / 'manual', 'zero_waste_f')
  _load(tmp_path / 'tfds', 'zero_waste_f', root)
  changes = _edit(root, edit)
  data_path = datasets.make_builder('zero_waste_f', data_dir=str(tmp_path / 'tfds')).data_path
  message = (f'{root} changed since ZeroWaste-f was prepared in {data_path} ({changes}); '
             f'delete {data_path} to prepare it again.')
  for split in ('train', 'val'):  # Every split refuses, not just the one first opened.
    with pytest.raises(DataError, match=f'^{re.escape(message)}$'):
      _load(tmp_path / 'tfds', 'zero_waste_f', root, split)
  # Without the folder (not given, or deleted) the prepared set is used as it is.
  assert len(_load(tmp_path / 'tfds', 'zero_waste_f', None)) == 3
  assert len(_load(tmp_path / 'tfds', 'zero_waste_f', str(tmp_path / 'deleted'))) == 3
  # The way out the message names.
  shutil.rmtree(data_path)
  if edit != 'removed':
    assert len(_load(tmp_path / 'tfds', 'zero_waste_f', root)) == 3 + (edit != 'touched')


def test_interseg_split_added_after_preparation(tmp_path):
  root = _write(tmp_path / 'manual', 'inter_seg_hands')
  shutil.rmtree(os.path.join(root, 'test'))  # test is optional
  _load(tmp_path / 'tfds', 'inter_seg_hands', root)
  _write(tmp_path / 'more', 'inter_seg_hands')
  shutil.copytree(tmp_path / 'more' / 'test', os.path.join(root, 'test'))
  with pytest.raises(DataError, match=re.escape(
      '(2 files added, e.g. test/depth/test_000.png); delete ')):
    _load(tmp_path / 'tfds', 'inter_seg_hands', root, 'val')


def test_manual_dir_unchanged_copied_or_without_fingerprint(tmp_path, caplog):
  root = _write(tmp_path / 'manual', 'zero_waste_f')
  _load(tmp_path / 'tfds', 'zero_waste_f', root)
  assert len(_load(tmp_path / 'tfds', 'zero_waste_f', root, 'val')) == 1
  # A copy that keeps the files' times (cp -a, rsync -a) is the same folder ...
  shutil.copytree(root, tmp_path / 'copy')
  assert len(_load(tmp_path / 'tfds', 'zero_waste_f', str(tmp_path / 'copy'))) == 3
  # ... one that does not is not.
  shutil.copytree(root, tmp_path / 'new_times', copy_function=shutil.copyfile)
  with pytest.raises(DataError, match=re.escape(
      f"{tmp_path / 'new_times'} differs from {root}, from which ZeroWaste-f was "
      'prepared in ')):
    _load(tmp_path / 'tfds', 'zero_waste_f', str(tmp_path / 'new_times'))
  # A data set prepared before fingerprints were kept is used, and says so.
  data_path = datasets.make_builder('zero_waste_f', data_dir=str(tmp_path / 'tfds')).data_path
  os.remove(data_path / builders.FINGERPRINT_FILE)
  caplog.set_level('INFO')
  assert len(_load(tmp_path / 'tfds', 'zero_waste_f', str(tmp_path / 'new_times'))) == 3
  assert 'prepared by an older version' in caplog.text


KILL_ON_THIRD_PAIR = """
import os, signal, sys
from input_pipeline import datasets, zerowaste
calls = []
def read_pair(*paths):
  calls.append(paths)
  if len(calls) == 3:
    os.kill(os.getpid(), signal.SIGKILL)
  return zerowaste.read_pair(*paths)
zerowaste.ZeroWasteF.read_pair = staticmethod(read_pair)
datasets.load_source('zero_waste_f', 'train', data_dir=sys.argv[1], manual_dir=sys.argv[2])
"""


def test_killed_or_failed_preparation_is_redone(tmp_path, monkeypatch):
  root = _write(tmp_path / 'manual', 'zero_waste_f')
  _load(tmp_path / 'clean', 'zero_waste_f', root)
  clean = _examples(tmp_path / 'clean', 'zero_waste_f')
  folder = tmp_path / 'tfds' / 'zero_waste_f'
  # Killed outright on the third pair: TFDS's temporary folder stays behind.
  killed = subprocess.run([sys.executable, '-c', KILL_ON_THIRD_PAIR, str(tmp_path / 'tfds'),
                           root], cwd=REPO, env={**os.environ, 'PYTHONPATH': REPO},
                          capture_output=True, check=False)
  assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
  assert [p.name for p in folder.glob('incomplete.*')]
  # Failed on the third pair: TFDS removes its temporary folder itself.
  calls = []

  def failing_read_pair(*paths):
    calls.append(paths)
    if len(calls) == 3:
      raise OSError('simulated read failure')
    return zerowaste.read_pair(*paths)
  monkeypatch.setattr(zerowaste.ZeroWasteF, 'read_pair', staticmethod(failing_read_pair))
  with pytest.raises(Exception, match='simulated read failure'):
    _load(tmp_path / 'tfds', 'zero_waste_f', root)
  monkeypatch.undo()
  assert not datasets.make_builder('zero_waste_f', data_dir=str(tmp_path / 'tfds')
                                   ).is_prepared()
  # The next call prepares the whole set again, and clears the leftovers.
  _load(tmp_path / 'tfds', 'zero_waste_f', root)
  assert not list(folder.glob('incomplete.*'))
  _assert_same(_examples(tmp_path / 'tfds', 'zero_waste_f'), clean)


def test_a_run_waiting_for_another_ones_preparation_uses_it(tmp_path):
  root = _write(tmp_path / 'manual', 'zero_waste_f')
  builder = datasets.make_builder('zero_waste_f', data_dir=str(tmp_path / 'tfds'))
  os.makedirs(builder.data_path.parent)
  opened = {}
  with open(builder.data_path.parent / datasets.PREPARE_LOCK, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Another run is preparing ...
    waiting = threading.Thread(target=lambda: opened.update(
        val=_load(tmp_path / 'tfds', 'zero_waste_f', root, 'val')))
    waiting.start()
    builder.download_and_prepare(
        download_config=datasets.tfds.download.DownloadConfig(manual_dir=root))
    assert waiting.is_alive()  # ... and this one waits for it ...
  waiting.join(timeout=60)
  assert len(opened['val']) == 1  # ... then opens what it prepared.
