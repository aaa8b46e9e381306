"""The annotation tool: labels for your own colour + depth captures.

`python -m input_pipeline.annotate` (`__main__.py`). Pass 1 segments every frame
automatically and writes contact sheets for review; pass 2 exports the reviewed
frames in the depth-data layout the trainer reads. Modules:

- `cli.py`: the command line (argument parsing, `main`).
- `frames.py`: finding the capture's colour / depth frame pairs, reading and
  checking them, the recording of each frame id.
- `auto_mask.py`: the automatic hand / object mask of one frame (skin colour and
  depth, Eq. 1 of docs/data.md).
- `first_pass.py`: pass 1, every frame annotated in parallel (resumable), then the
  contact sheets and the review list.
- `contact_sheet.py`: overlays, contact sheets and the review list.
- `export.py`: pass 2, the accepted frames exported to train / val, split by
  recording.
"""
