"""PyTorch interop: the reference implementation and checkpoint conversion.

`reference.py` is an independent PyTorch implementation of the models, written from
docs/models.md, that the tests compare ours with; `names.py` maps parameter names
and layouts between the two frameworks; `convert.py` converts variables in either
direction; `state_dict.py` reads and writes state-dict files. Only `reference.py`
and the `.pth` readers need torch.
"""
