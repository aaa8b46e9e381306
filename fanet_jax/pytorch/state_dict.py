"""State-dict files: reading and writing `.pth`, `.safetensors` and `.npz`.

The file side of the weight converter (`convert.py` maps names and layouts): a state
dict is name -> numpy array here, whatever the file held. Torch files are read with
`torch.load(weights_only=True)` and, only when the caller trusts the file, fully
unpickled; training checkpoints are unwrapped from their `state_dict` / `model`
containers and a DataParallel `module.` prefix is removed. torch is imported only
for `.pth` / `.pth.tar` / `.pt` / `.bin` files; `.safetensors` and `.npz` need
neither torch nor pickle.
"""
import os
import pickle
from typing import Mapping

import numpy as np

TORCH_INSTALL = 'pip install torch==2.13.0'
_TORCH_EXTENSIONS = ('.pth', '.pth.tar', '.pt', '.bin')
_EXTENSIONS = _TORCH_EXTENSIONS + ('.safetensors', '.npz')


class ConvertError(ValueError):
  """An input that cannot be converted; the message says which and why.

  Raised for unreadable files here and for inputs that do not fit a model in
  `convert.py`, which re-exports it.
  """


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConvertError(f'.pth files need PyTorch, which is not installed: '
                       f'{TORCH_INSTALL}') from None
  return torch


def _extension(path: str) -> str:
  for ext in sorted(_EXTENSIONS, key=len, reverse=True):
    if path.lower().endswith(ext):
      return ext
  raise ConvertError(f'{path}: unknown file type; expected one of '
                     f'{", ".join(_EXTENSIONS)}')


def _unwrap(obj):
  # Training scripts save {'state_dict': ...} (timm, mmseg) or {'model': ...} (DeiT);
  # `torch.save(model)` saves the module itself.
  if callable(getattr(obj, 'state_dict', None)):
    obj = obj.state_dict()
  while isinstance(obj, Mapping):
    inner = next((obj[k] for k in ('state_dict', 'model') if isinstance(obj.get(k),
                                                                         Mapping)), None)
    if inner is None:
      return obj
    obj = inner
  raise ConvertError(f'expected a state dict (name -> tensor), got {type(obj).__name__}')


def _first_line(error: Exception) -> str:
  return (str(error).strip() or type(error).__name__).splitlines()[0]


def _read_torch(path: str, trust_pickle: bool):
  torch = _import_torch()
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:   # holds more than tensors and plain containers
    if not trust_pickle:
      raise ConvertError(
          f'{path}: holds Python objects besides tensors ({_first_line(e)}). If you '
          'trust the file, pass --trust-pickle (trust_pickle=True) to unpickle it '
          'fully, which runs code from the file.') from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConvertError(f'{path}: not a readable torch file ({_first_line(e)})') from None
  try:
    return torch.load(path, map_location='cpu', weights_only=False)
  except Exception as e:  # pylint: disable=broad-except  (e.g. a class of mmcv's)
    raise ConvertError(f'{path}: cannot be unpickled ({_first_line(e)})') from None


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):          # a torch tensor; numpy has no bfloat16
    value = value.detach().cpu()
    if not value.dtype.is_floating_point or value.dtype.itemsize >= 4:
      return value.numpy()
    return value.float().numpy()
  return np.asarray(value)


def load_state_dict_file(path: str, *, trust_pickle: bool = False) -> dict:
  """Reads a state dict from `.pth` / `.pth.tar` / `.pt`, `.safetensors` or `.npz`.

  Args:
    path: the file.
    trust_pickle: for torch files that hold more than tensors (e.g. argparse
      namespaces): unpickle fully, which runs code from the file.

  Returns:
    name -> numpy array, unwrapped from `state_dict` / `model` containers, with a
    `module.` (DataParallel) prefix removed.

  Raises:
    ConvertError: missing file, unknown extension, torch missing, unreadable file.
  """
  if not os.path.isfile(path):
    raise ConvertError(f'{path}: no such file')
  ext = _extension(path)
  if ext in _TORCH_EXTENSIONS:
    obj = _read_torch(path, trust_pickle)
  else:
    try:
      if ext == '.safetensors':
        from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
        obj = load_file(path)
      else:
        with np.load(path, allow_pickle=False) as npz:
          obj = dict(npz)
    except Exception as e:  # pylint: disable=broad-except
      raise ConvertError(f'{path}: not a readable {ext} file ({_first_line(e)})') from None
  prefix = 'module.'
  return {(k[len(prefix):] if k.startswith(prefix) else k): _to_numpy(v)
          for k, v in _unwrap(obj).items()}


def check_writable(path: str) -> None:
  """Fails early, before any work, when `save_state_dict_file(path, ...)` would.

  Args:
    path: the file to be written.

  Raises:
    ConvertError: unknown extension, or a torch extension without torch installed.
  """
  if _extension(path) in _TORCH_EXTENSIONS:
    _import_torch()


def save_state_dict_file(path: str, state_dict: dict) -> None:
  """Writes a state dict as `.pth` / `.pth.tar` / `.pt` (torch), `.safetensors` or `.npz`.

  Args:
    path: the file; its extension chooses the format.
    state_dict: name -> numpy array.

  Raises:
    ConvertError: unknown extension or torch missing.
  """
  ext = _extension(path)
  if ext in _TORCH_EXTENSIONS:
    torch = _import_torch()
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, path)
  elif ext == '.safetensors':
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file(state_dict, path)
  else:
    np.savez(path, **state_dict)
