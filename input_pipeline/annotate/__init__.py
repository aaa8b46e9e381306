"""The annotation tool: labels for your own colour + depth captures.

`python -m input_pipeline.annotate` (cli.py). Pass 1 segments every frame
automatically (auto_mask.py: skin colour and depth, Eq. 1 of docs/data.md) and
writes contact sheets for review (contact_sheet.py); pass 2 exports the reviewed
frames in the depth-data layout the trainer reads.
"""
