"""Tests of the hand / object auto-annotation (DenseAttentionSeg section 3, Eq. 1).

Frames are generated with known truth at 640x480: a skin-coloured hand (palm, wrist,
four finger capsules and a thumb, sometimes behind the object) holding a coloured
object, a background 30-60 cm behind them with skin-coloured patches, colour and
depth noise, sensor holes, and colour-depth misalignment: a thin skin band beside
each finger, separated from it by a strip of missing depth (the sensor's edge
dropout). Then Eq. 1 on hand-made masks, the input checks, and the command-line
tool end to end: resumability, review, a leak-free split by recording, and the
export read back by the `inter_seg_hands` TFDS builder.
"""
import colorsys
import os
import re

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage

from input_pipeline.annotate import auto_mask
from input_pipeline.annotate import cli
from input_pipeline.annotate import contact_sheet
from input_pipeline.annotate import export
from input_pipeline.annotate import frames as capture_frames
from input_pipeline import datasets
from input_pipeline.errors import DataError

H, W = 480, 640
YY, XX = np.mgrid[0:H, 0:W].astype(np.float32)
OBJECT_COLOURS = ((220, 0.7, 0.7), (120, 0.6, 0.6), (280, 0.5, 0.6), (180, 0.6, 0.7),
                  (0, 0.9, 0.8), (58, 0.9, 0.9), (30, 0.1, 0.9))  # HSV, none skin.


def _rgb(hue, saturation, value):
  return np.array(colorsys.hsv_to_rgb(hue / 360.0, saturation, value)) * 255.0


def _capsule(ax, ay, bx, by):
  """Distance of every pixel to the segment AB, its position t along AB, its side."""
  dx, dy = bx - ax, by - ay
  t = np.clip(((XX - ax) * dx + (YY - ay) * dy) / (dx * dx + dy * dy), 0, 1)
  return (np.hypot(XX - ax - t * dx, YY - ay - t * dy), t,
          np.sign((XX - ax) * dy - (YY - ay) * dx))


def render_frame(rng, misalign=True):
  """Returns uint8 colour, uint16 depth (mm), uint8 truth and the misalignment bands."""
  hand_mm = rng.uniform(350, 500)
  depth = hand_mm + rng.uniform(300, 600) + 0.2 * (XX - W / 2) * rng.uniform(-1, 1)
  rgb = np.empty((H, W, 3), np.float32)
  rgb[:] = _rgb(rng.uniform(0, 360), rng.uniform(0, 0.6), rng.uniform(0.3, 0.9))
  for _ in range(4):  # Skin-coloured patches (a table, a face): depth rules them out.
    x, y, half_w, half_h = (rng.uniform(0, W), rng.uniform(0, H), rng.uniform(40, 160),
                            rng.uniform(40, 120))
    patch = (np.abs(XX - x) < half_w) & (np.abs(YY - y) < half_h)
    rgb[patch] = _rgb(rng.uniform(10, 40), rng.uniform(0.3, 0.6), rng.uniform(0.5, 0.9))
  truth = np.zeros((H, W), np.uint8)
  cx, cy = rng.uniform(250, 390), rng.uniform(200, 260)
  # Fingers (axis from the palm outwards, radius) and the thumb, last.
  fingers = []
  for spread in np.linspace(-0.45, 0.45, 4) + rng.uniform(-0.08, 0.08, 4):
    length = rng.uniform(85, 115)
    ax, ay = cx + 60 * np.sin(spread), cy - 55 * np.cos(spread)
    fingers.append((ax, ay, ax + length * np.sin(spread), ay - length * np.cos(spread),
                    rng.uniform(10, 13)))
  angle = rng.choice([-1, 1]) * rng.uniform(1.0, 1.4)
  ax, ay = cx + 50 * np.sin(angle), cy - 20
  fingers.append((ax, ay, ax + 75 * np.sin(angle), ay - 75 * np.cos(angle), 13))
  thumb = _capsule(*fingers[-1][:4])[0] <= 13
  # The object, held 3-9 cm behind the fingers; the thumb sometimes behind it.
  angle, a, b = rng.uniform(0, np.pi), rng.uniform(110, 160), rng.uniform(65, 100)
  u = (XX - cx) * np.cos(angle) + (YY - cy + 90) * np.sin(angle)
  v = -(XX - cx) * np.sin(angle) + (YY - cy + 90) * np.cos(angle)
  obj = ((u / a) ** 2 + (v / b) ** 2 <= 1) if rng.random() < 0.5 else (
      (np.abs(u) <= a) & (np.abs(v) <= b))
  object_mm = hand_mm + rng.uniform(30, 90)
  thumb_behind = rng.random() < 0.5
  rx, ry = rng.uniform(55, 65), rng.uniform(60, 70)
  hand = ((XX - cx) / rx) ** 2 + ((YY - cy) / ry) ** 2 <= 1  # Palm.
  hand |= _capsule(cx, cy, cx + rng.uniform(-30, 30), H + 40)[0] <= 42  # Wrist.
  for ax, ay, bx, by, radius in fingers[:-1]:
    hand |= _capsule(ax, ay, bx, by)[0] <= radius
  hand |= (thumb & ~obj) if thumb_behind else thumb
  obj &= ~hand
  tone = _rgb(rng.uniform(12, 35), rng.uniform(0.3, 0.55), rng.uniform(0.6, 0.9))
  shade = 1 + 0.1 * np.sin(XX / 23 + rng.uniform(0, 6)) * np.cos(YY / 31)
  rgb[obj] = _rgb(*OBJECT_COLOURS[rng.integers(len(OBJECT_COLOURS))]) * shade[obj, None]
  rgb[hand] = tone * shade[hand, None]
  depth[obj] = object_mm + 0.1 * (YY[obj] - cy)
  depth[hand] = hand_mm + 0.05 * (YY[hand] - cy)
  if thumb_behind:
    depth[hand & thumb] += 110
  truth[obj], truth[hand] = auto_mask.OBJECT, auto_mask.HAND
  # Misalignment: on one side of every finger a skin band 1-2 px wide, 1-2 px away.
  bands = np.zeros((H, W), bool)
  if misalign:
    to_hand = ndimage.distance_transform_edt(~hand)
    gap, width, side = rng.integers(1, 3), rng.integers(1, 3), rng.choice([-1, 1])
    for ax, ay, bx, by, radius in fingers:
      dist, t, s = _capsule(ax, ay, bx, by)
      near = (s == side) & (t > 0.25) & (dist <= radius + gap + width + 1)
      depth[near & (to_hand > 0) & (to_hand <= gap + 0.5)] = 0  # Edge dropout.
      band = near & (to_hand > gap + 0.5) & (to_hand <= gap + 0.5 + width)
      rgb[band] = tone
      bands |= band
  rgb += rng.normal(0, 4, rgb.shape)
  depth = np.where(depth > 0, depth + rng.normal(0, 1.5, depth.shape), 0)
  for _ in range(50):  # Sensor holes.
    x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(1, 4)
    depth[(XX - x) ** 2 + (YY - y) ** 2 <= r * r] = 0
  return (np.clip(rgb, 0, 255).astype(np.uint8), np.round(depth).astype(np.uint16),
          truth, bands)


def _iou(a, b):
  return (a & b).sum() / (a | b).sum()


@pytest.fixture(scope='module')
def frames():
  return [render_frame(np.random.default_rng(seed)) for seed in range(6)]


def test_auto_annotation_matches_the_truth(frames):
  for rgb, depth, truth, _ in frames:
    labels = auto_mask.annotate_frame(rgb, depth)
    assert _iou(labels == 1, truth == 1) >= 0.9
    assert _iou(labels == 2, truth == 2) >= 0.9


def test_contour_filter_removes_misalignment_bands(frames):
  without = auto_mask.no_contour_filter(auto_mask.AnnotateParams())
  for rgb, depth, truth, bands in frames:
    in_band = bands & (depth > 0) & (truth == 2)  # Over the object: step 1 keeps them.
    assert in_band.sum() > 200
    raw, filtered = (auto_mask.annotate_frame(rgb, depth, p)
                     for p in (without, auto_mask.AnnotateParams()))
    assert (raw[in_band] == 1).mean() > 0.9  # Skin: hand, after steps 1-2.
    assert (filtered[in_band] == 1).mean() < 0.02  # Step 3 drops them from the hand,
    assert (filtered[in_band] == 2).mean() > 0.9  # and the object takes them back.
    assert _iou(filtered == 1, truth == 1) > _iou(raw == 1, truth == 1)


def _direct_eq1(mask):
  """Area and perimeter of every 8-connected segment, pixel by pixel."""
  labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
  area, perimeter = np.zeros(count + 1, int), np.zeros(count + 1, int)
  for y, x in zip(*np.nonzero(mask)):
    area[labels[y, x]] += 1
    outside = [not (0 <= y + dy < mask.shape[0] and 0 <= x + dx < mask.shape[1]
                    and mask[y + dy, x + dx])
               for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    perimeter[labels[y, x]] += any(outside)
  return labels, area, perimeter


TINY_MASKS = {  # name: (mask rows, area, perimeter), counted by hand.
    'square 3x3': (['###', '###', '###'], 9, 8),
    'line 1x6': (['######'], 6, 6),
    'plus': (['.#.', '###', '.#.'], 5, 4),
    'diagonal pair (one 8-connected segment)': (['#.', '.#'], 2, 2),
    'hollow square 5x5': (['#####', '#...#', '#...#', '#...#', '#####'], 16, 16),
    'band 2x10': (['##########', '##########'], 20, 20),
    'disc r=3': (['..###..', '.#####.', '#######', '#######', '#######', '.#####.',
                  '..###..'], 37, 16),
}


@pytest.mark.parametrize('name', TINY_MASKS)
def test_eq1_area_and_perimeter_on_hand_made_masks(name):
  rows, area, perimeter = TINY_MASKS[name]
  mask = np.pad(np.array([[c == '#' for c in row] for row in rows]), 2)
  labels, areas, perimeters = auto_mask.segment_stats(mask)
  assert labels.max() == 1 and (areas[1], perimeters[1]) == (area, perimeter)
  on_border = np.array([[c == '#' for c in row] for row in rows])  # Image edge = outside.
  _, areas, perimeters = auto_mask.segment_stats(on_border)
  assert (areas[1], perimeters[1]) == (area, perimeter)


def test_eq1_keep_decision_matches_a_direct_computation():
  rng = np.random.default_rng(0)
  mask = np.zeros((120, 160), bool)
  for rows, _, _ in TINY_MASKS.values():  # Scattered copies, several scales.
    shape = np.array([[c == '#' for c in row] for row in rows])
    for scale in (1, 2, 4, 6):
      big = np.kron(shape, np.ones((scale, scale), bool))
      y, x = rng.integers(0, 120 - big.shape[0]), rng.integers(0, 160 - big.shape[1])
      mask[y: y + big.shape[0], x: x + big.shape[1]] |= big
  labels, area, perimeter = _direct_eq1(mask)
  np.testing.assert_array_equal(auto_mask.segment_stats(mask)[0], labels)
  np.testing.assert_array_equal(auto_mask.segment_stats(mask)[1], area)
  np.testing.assert_array_equal(auto_mask.segment_stats(mask)[2], perimeter)
  for theta, phi in ((0, np.inf), (8, 20.0), (30, 16.0), (100, 40.0)):
    keep = [i for i in range(1, len(area))
            if area[i] > theta and perimeter[i] ** 2 / area[i] < phi]
    np.testing.assert_array_equal(auto_mask.filter_segments(mask, theta, phi),
                                  np.isin(labels, keep))
    assert 0 < len(keep) <= len(area) - 1


def test_background_band_and_invalid_depth():
  depth = np.array([[0, 400, 450, 560], [561, 900, 0, 200]], np.uint16)
  # The paper's nearest surface: one flying pixel at 20 cm takes the band.
  np.testing.assert_array_equal(auto_mask.eliminate_background(depth, 160, near_pixels=1),
                                [[0, 0, 0, 0], [0, 0, 0, 1]])
  # The second nearest pixel: 400..560 mm (inclusive) is kept, 0 never.
  np.testing.assert_array_equal(auto_mask.eliminate_background(depth, 160, near_pixels=2),
                                [[0, 1, 1, 1], [0, 0, 0, 1]])
  assert not auto_mask.eliminate_background(np.zeros((4, 4), np.uint16)).any()


def test_skin_thresholds():
  colours = np.array([[(224, 172, 105), (198, 134, 66), (255, 0, 0), (40, 80, 200),
                       (80, 60, 40), (240, 230, 220), (255, 100, 130)]], np.uint8)
  np.testing.assert_array_equal(auto_mask.skin_mask(colours),
                                [[1, 1, 0, 0, 0, 0, 0]])  # Dark, pale, pink: no.
  wrapped = auto_mask.SkinThresholds(hue=(-20, 50), saturation=(0.2, 0.7))
  assert auto_mask.skin_mask(colours, wrapped)[0, 6]  # Hue 348 degrees.


# Frame ids <recording>_<frame>; at --val-fraction 0.1 lab_b hashes into val, the
# other two into train.
FRAME_IDS = ('desk01_000000', 'desk01_000001', 'kitchen01_000000', 'kitchen01_000001',
             'lab_b_000000', 'lab_b_000001')


@pytest.fixture(scope='module')
def capture(tmp_path_factory, frames):
  root = tmp_path_factory.mktemp('capture')
  for sub in ('color', 'depth'):
    os.makedirs(root / sub)
  for frame_id, (rgb, depth, _, _) in zip(FRAME_IDS, frames):
    Image.fromarray(rgb).save(root / 'color' / f'{frame_id}.png')
    Image.fromarray(depth).save(root / 'depth' / f'{frame_id}.png')
  return root


def _copy_capture(capture, tmp_path):
  for sub in ('color', 'depth'):
    os.makedirs(tmp_path / sub)
    for name in os.listdir(capture / sub):
      os.link(capture / sub / name, tmp_path / sub / name)
  return str(tmp_path / 'color'), str(tmp_path / 'depth')


def test_annotate_review_export_end_to_end(capture, tmp_path, capsys):
  out = str(tmp_path / 'out')
  argv = ['--color', str(capture / 'color'), '--depth', str(capture / 'depth'),
          '--out', out, '--workers', '1']
  assert cli.main(argv) == 0
  assert '0 already annotated (skipped), 6 to annotate' in capsys.readouterr().out
  masks = [os.path.join(out, '_work', 'mask', f'{i}.png') for i in FRAME_IDS]
  times = [os.path.getmtime(path) for path in masks]
  assert os.path.exists(os.path.join(out, '_work', 'sheets', 'sheet_0000.png'))
  assert all(os.path.exists(os.path.join(out, '_work', 'overlay', f'{i}.jpg'))
             for i in FRAME_IDS)
  # Resumable: a second run skips every frame and keeps the person's decisions.
  review = os.path.join(out, 'review.txt')
  with open(review) as f:
    text = f.read()
  assert [line.split()[1] for line in text.splitlines()
          if line.startswith('accept')] == list(FRAME_IDS)
  with open(review, 'w') as f:
    f.write(text.replace('accept desk01_000001', 'reject desk01_000001'))
  assert cli.main(argv) == 0
  assert '6 already annotated (skipped), 0 to annotate' in capsys.readouterr().out
  assert [os.path.getmtime(path) for path in masks] == times
  assert 'reject desk01_000001' in open(review).read()
  # Export: accepted frames only, split by recording.
  assert cli.main(['--depth', str(capture / 'depth'), '--out', out,
                        '--review', review]) == 0
  exported = {split: sorted(os.listdir(os.path.join(out, split, 'mask')))
              for split in ('train', 'val')}
  assert exported == {'train': ['desk01_000000.png', 'kitchen01_000000.png',
                                'kitchen01_000001.png'],
                      'val': ['lab_b_000000.png', 'lab_b_000001.png']}
  for split, names in exported.items():
    assert sorted(os.listdir(os.path.join(out, split, 'depth'))) == names
  with Image.open(os.path.join(out, 'train', 'depth', 'desk01_000000.png')) as image:
    assert image.mode == 'I;16'
  # The depth TFDS builder reads the export as it is.
  for split, names in exported.items():
    source = datasets.load_source('inter_seg_hands', split,
                                  data_dir=str(tmp_path / 'tfds'), manual_dir=out)
    assert [source[i]['file_name'] for i in range(len(source))] == names
    for i, name in enumerate(names):
      with Image.open(capture / 'depth' / name) as depth:
        np.testing.assert_array_equal(source[i]['image'][..., 0], np.asarray(depth))
      with Image.open(os.path.join(out, '_work', 'mask', name)) as mask:
        np.testing.assert_array_equal(source[i]['label'], np.asarray(mask))
  # The export follows the edited list: a frame rejected later is removed.
  with open(review) as f:
    text = f.read()
  with open(review, 'w') as f:
    f.write(text.replace('accept kitchen01_000001', 'reject kitchen01_000001'))
  counts = export.export(out, str(capture / 'depth'), review,
                           re.compile(capture_frames.RECORDING_REGEX), 0.1)
  assert counts == {'train': 2, 'val': 2}
  assert 'kitchen01_000001.png' not in os.listdir(os.path.join(out, 'train', 'depth'))


def test_parallel_annotation_equals_serial(capture, tmp_path, capsys):
  outs = [str(tmp_path / name) for name in ('serial', 'parallel')]
  for out, workers in zip(outs, ('1', '2')):
    assert cli.main(['--color', str(capture / 'color'), '--depth',
                          str(capture / 'depth'), '--out', out,
                          '--workers', workers]) == 0
  for frame_id in FRAME_IDS:
    serial, parallel = (np.asarray(Image.open(os.path.join(out, '_work', 'mask',
                                                           f'{frame_id}.png')))
                        for out in outs)
    np.testing.assert_array_equal(serial, parallel)
    assert set(np.unique(serial)) == {0, 1, 2}


def test_split_by_recording_is_deterministic_and_leak_free():
  names = [f'session{i:03d}' for i in range(2000)]
  splits = [export.split_of(name, 0.1) for name in names]
  assert splits == [export.split_of(name, 0.1) for name in names]  # Stable hash.
  assert 0.08 < splits.count('val') / len(names) < 0.12
  pattern = re.compile(capture_frames.RECORDING_REGEX)
  assert capture_frames.recording_of('lab_b_000017', pattern, 'x') == 'lab_b'
  # Every frame of a recording has its recording's split.
  frames = [f'{name}_{index:06d}' for name in names[:50] for index in range(5)]
  by_recording = {}
  for frame_id in frames:
    split = export.split_of(capture_frames.recording_of(frame_id, pattern, 'x'), 0.1)
    by_recording.setdefault(frame_id.rsplit('_', 1)[0], set()).add(split)
  assert all(len(splits) == 1 for splits in by_recording.values())
  # Raising the fraction only moves recordings from train to val.
  assert all(export.split_of(name, 0.3) == 'val' for name, split in zip(names, splits)
             if split == 'val')


def test_input_errors_name_the_file(capture, tmp_path, capsys):
  color, depth = _copy_capture(capture, tmp_path)
  pattern = re.compile(capture_frames.RECORDING_REGEX)
  # Missing pairs: all listed.
  os.remove(os.path.join(depth, 'desk01_000001.png'))
  Image.fromarray(np.zeros((48, 64), np.uint16)).save(os.path.join(depth, 'desk09_0.png'))
  with pytest.raises(DataError) as error:
    capture_frames.find_frames(color, depth, pattern)
  assert os.path.join(color, 'desk01_000001.png') in str(error.value)
  assert os.path.join(depth, 'desk09_0.png') in str(error.value)
  os.remove(os.path.join(depth, 'desk09_0.png'))
  os.remove(os.path.join(color, 'desk01_000001.png'))
  # A file name that gives no recording.
  for sub in (color, depth):
    os.link(os.path.join(sub, 'desk01_000000.png'), os.path.join(sub, 'norecording.png'))
  with pytest.raises(DataError, match=re.escape(os.path.join(color, 'norecording.png'))):
    capture_frames.find_frames(color, depth, pattern)
  for sub in (color, depth):
    os.remove(os.path.join(sub, 'norecording.png'))
  frames = {frame.id: frame
            for frame in capture_frames.find_frames(color, depth, pattern)}
  # Sizes differ; depth that is 8-bit; an unreadable file.
  rgb, _, _, _ = render_frame(np.random.default_rng(0))
  os.remove(frames['kitchen01_000000'].color)
  Image.fromarray(rgb[::2, ::2]).save(frames['kitchen01_000000'].color)
  with pytest.raises(DataError, match=re.escape(frames['kitchen01_000000'].depth) +
                     '.* 640x480 .*' + re.escape(frames['kitchen01_000000'].color)):
    capture_frames.read_frame(frames['kitchen01_000000'])
  os.remove(frames['kitchen01_000001'].depth)
  Image.fromarray(np.zeros((480, 640), np.uint8)).save(frames['kitchen01_000001'].depth)
  with pytest.raises(DataError, match=re.escape(frames['kitchen01_000001'].depth) +
                     ': depth is 8-bit'):
    capture_frames.read_frame(frames['kitchen01_000001'])
  os.remove(frames['lab_b_000000'].color)
  with open(frames['lab_b_000000'].color, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n truncated')
  with pytest.raises(DataError, match=re.escape(frames['lab_b_000000'].color) +
                     ': not a readable image'):
    capture_frames.read_frame(frames['lab_b_000000'])
  # Through the command: every bad frame is listed, the good ones are done.
  out = str(tmp_path / 'out')
  assert cli.main(['--color', color, '--depth', depth, '--out', out,
                        '--workers', '1']) == 2
  message = capsys.readouterr().err
  assert 'error: 3 frames could not be read' in message
  assert all(frames[i].depth in message or frames[i].color in message
             for i in ('kitchen01_000000', 'kitchen01_000001', 'lab_b_000000'))
  assert sorted(os.listdir(os.path.join(out, '_work', 'mask'))) == [
      'desk01_000000.png', 'lab_b_000001.png']


def test_review_list_errors_name_the_line(tmp_path):
  review = tmp_path / 'review.txt'
  review.write_text('# sheet_0000.png\naccept a_1\nkeep a_2\n')
  with pytest.raises(DataError, match=re.escape(f'{review}:3: ')):
    contact_sheet.read_review(str(review))
