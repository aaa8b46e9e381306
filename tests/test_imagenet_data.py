"""Tests of the ImageNet-1K data side: the synthetic builder, the classification sources.

The synthetic set is checked for split sizes, format, class coverage, varied image
sizes and determinism, and that building and reading it never imports TensorFlow.
imagenet2012 is read from a folder in its real layout (name, version, features)
written by a subclass of TFDS's own builder that replaces only the generation from
the tars; real preparation needs TensorFlow and the tars, so it is not tested here
beyond its error messages.
"""
import importlib.util
import json
import os
import pickle
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from input_pipeline import image_files
from input_pipeline import imagenet
from input_pipeline import synthetic_imagenet
from input_pipeline.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tiny(data_dir):
  return {split: imagenet.load_classification_source(
      'synthetic_imagenet', split, data_dir=str(data_dir), builder_config='tiny')
          for split in ('train', 'validation')}


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def tiny(tiny_dir):
  return _load_tiny(tiny_dir)


def test_tiny_splits_labels_and_format(tiny):
  shapes = set()
  for split, size in (('train', 30), ('validation', 10)):
    source = tiny[split]
    assert len(source) == size and source.num_classes == 10
    labels = []
    for index in range(len(source)):
      example = source[index]
      image, label = example['image'], example['label']
      assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
      assert 32 <= min(image.shape[:2]) and max(image.shape[:2]) <= 48
      assert isinstance(label, np.int32) and label.shape == ()
      assert isinstance(example['file_name'], str)
      assert example['file_name'].endswith('.JPEG')
      labels.append(int(label))
      shapes.add(image.shape)
    assert sorted(set(labels)) == list(range(10))  # Every class, in range.
  assert len(shapes) > 10  # Sizes and aspects vary.


def test_features_match_imagenet2012(tmp_path):
  ours = synthetic_imagenet.SyntheticImagenet(data_dir=str(tmp_path)).info.features
  real = imagenet.CLASSIFICATION_BUILDERS['imagenet2012'](data_dir=str(tmp_path))
  theirs = real.info.features
  assert set(ours) == set(theirs) == {'image', 'label', 'file_name'}
  for key in ours:
    assert type(ours[key]) is type(theirs[key])
  assert ours['image'].shape == theirs['image'].shape == (None, None, 3)
  assert ours['image'].encoding_format == theirs['image'].encoding_format == 'jpeg'
  demo = synthetic_imagenet.SyntheticImagenet.builder_configs['demo']
  assert (demo.num_classes, demo.train_per_class, demo.validation_per_class,
          demo.size_range) == (10, 40, 10, (48, 96))


def test_synthetic_build_is_deterministic(tiny, tmp_path):
  again = _load_tiny(tmp_path)
  for split in ('train', 'validation'):
    for index in range(len(tiny[split])):
      first, second = tiny[split][index], again[split][index]
      np.testing.assert_array_equal(first['image'], second['image'])
      assert first['label'] == second['label']
      assert first['file_name'] == second['file_name']
  # Example i comes from its own seed (seed, split id, i) alone; label i mod 10.
  image = synthetic_imagenet.render_example(np.random.default_rng((0, 1, 3)), 3, 10,
                                            (32, 48))
  stored = tiny['validation'][3]
  assert stored['label'] == 3
  np.testing.assert_array_equal(
      stored['image'],
      imagenet.decode_rgb(image_files.jpeg_bytes(image, synthetic_imagenet.JPEG_QUALITY)))


def test_source_pickles_for_grain_workers(tiny):
  restored = pickle.loads(pickle.dumps(tiny['train']))
  assert restored.num_classes == 10 and len(restored) == 30
  np.testing.assert_array_equal(restored[7]['image'], tiny['train'][7]['image'])


NO_TF_SCRIPT = """
import sys
import numpy as np
from input_pipeline import imagenet
source = imagenet.load_classification_source(
    'synthetic_imagenet', 'train', data_dir=sys.argv[1], builder_config='tiny')
ours = [source[i]['image'] for i in range(len(source))]
# TFDS's own decoding of the Image feature, the numpy path, also works without TF.
builder = imagenet.CLASSIFICATION_BUILDERS['synthetic_imagenet'](
    data_dir=sys.argv[1], config='tiny')
theirs = builder.as_data_source('train')
assert all(np.array_equal(a, theirs[i]['image']) for i, a in enumerate(ours))
# Building and reading never imported TensorFlow (TFDS only probes for it).
assert not [m for m in sys.modules if m.split('.')[0] == 'tensorflow']
print('read', len(ours), 'without tensorflow')
"""


def test_build_and_read_without_tensorflow(tmp_path):
  result = subprocess.run([sys.executable, '-c', NO_TF_SCRIPT, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'read 30 without tensorflow' in result.stdout


def _jpeg(mode, colour):
  return image_files.jpeg_bytes(Image.new(mode, (40, 30), colour), quality=95)


class FakeImagenet2012(imagenet.CLASSIFICATION_BUILDERS['imagenet2012'],
                       skip_registration=True):
  """TFDS's imagenet2012 (name, version, features) with 3 examples instead of the tars."""
  name = 'imagenet2012'

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(), 'validation': self._generate_examples()}

  def _generate_examples(self):
    # Real ImageNet holds a few grayscale JPEGs; CMYK ones are fixed by TFDS >= 3.0.0.
    for i, (mode, colour) in enumerate((('RGB', (200, 10, 10)), ('L', 128),
                                        ('CMYK', (0, 255, 255, 0)))):
      yield f'n01440764_{i}.JPEG', {'image': _jpeg(mode, colour), 'label': 'n01443537',
                                    'file_name': f'n01440764_{i}.JPEG'}


def _fake_imagenet(data_dir):
  builder = FakeImagenet2012(data_dir=str(data_dir), file_format='array_record')
  builder.download_and_prepare()
  return builder.data_path


def test_prepared_imagenet_layout_is_read_as_rgb(tmp_path):
  _fake_imagenet(tmp_path)
  source = imagenet.load_classification_source('imagenet2012', 'validation',
                                                data_dir=str(tmp_path))
  assert len(source) == 3 and source.num_classes == imagenet.IMAGENET_NUM_CLASSES
  colours = {}
  for index in range(3):
    example = source[index]
    assert example['image'].shape == (30, 40, 3) and example['image'].dtype == np.uint8
    assert example['label'] == 1  # n01443537 is the second synset.
    colours[example['file_name']] = example['image'][15, 20].astype(int)
  assert np.abs(colours['n01440764_0.JPEG'] - (200, 10, 10)).max() <= 6
  assert np.abs(colours['n01440764_1.JPEG'] - 128).max() <= 2  # Gray -> 3 channels.
  assert np.abs(colours['n01440764_2.JPEG'] - (255, 0, 0)).max() <= 6  # CMYK -> RGB.


def test_unprepared_imagenet_names_folder_and_command(tmp_path):
  with pytest.raises(DataError) as error:
    imagenet.load_classification_source('imagenet2012', 'train', data_dir=str(tmp_path),
                                        manual_dir='/data/ilsvrc')
  message = str(error.value)
  assert str(tmp_path / 'imagenet2012' / '5.1.0') in message
  assert (f'python -m input_pipeline.imagenet prepare --manual_dir /data/ilsvrc '
          f'--data_dir {tmp_path}') in message


def test_imagenet_prepared_as_tfrecord_is_refused(tmp_path):
  # A folder whose dataset_info.json says tfrecord (writing real tfrecord shards
  # needs TensorFlow): only the format check is under test.
  folder = _fake_imagenet(tmp_path)
  info_path = folder / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'
  info_path.write_text(json.dumps(info))
  for path in folder.glob('*.array_record-*'):
    path.rename(str(path).replace('.array_record-', '.tfrecord-'))
  with pytest.raises(DataError, match='convert_format') as error:
    imagenet.load_classification_source('imagenet2012', 'train', data_dir=str(tmp_path))
  assert str(folder) in str(error.value) and 'tfrecord' in str(error.value)


@pytest.mark.parametrize('name, split, config, match', [
    ('imagenet', 'train', None, 'Unknown data set'),
    ('synthetic_imagenet', 'train', 'huge', 'Unknown builder config'),
    ('synthetic_imagenet', 'test', 'tiny', "no split 'test'"),
    ('imagenet2012', 'train', 'tiny', 'no builder configs'),
])
def test_bad_arguments_are_named(tiny, tiny_dir, name, split, config, match):
  del tiny  # Prepared: the split check runs on the prepared synthetic set.
  with pytest.raises(DataError, match=match):
    imagenet.load_classification_source(name, split, data_dir=str(tiny_dir),
                                        builder_config=config)


def test_prepare_cli_names_missing_tars(tmp_path, capsys):
  assert imagenet.main(['prepare', '--manual_dir', str(tmp_path),
                        '--data_dir', str(tmp_path / 'tfds')]) == 2
  err = capsys.readouterr().err
  assert str(tmp_path) in err and 'ILSVRC2012_img_train.tar' in err


@pytest.mark.skipif(importlib.util.find_spec('tensorflow') is not None,
                    reason='TensorFlow is installed: preparation would start.')
def test_prepare_cli_without_tensorflow_says_how_to_get_it(tmp_path, capsys):
  for name in imagenet.MANUAL_FILES:
    (tmp_path / name).write_bytes(b'')
  assert imagenet.main(['prepare', '--manual_dir', str(tmp_path),
                        '--data_dir', str(tmp_path / 'tfds')]) == 2
  assert 'pip install tensorflow' in capsys.readouterr().err
