"""A static HTML report of one training run, or a comparison of several.

  python -m fanet_jax.report workdirs/demo
  python -m fanet_jax.report workdirs/ablation_* --output reports/ablation --images 9
  python -m fanet_jax.report workdirs/demo --split val --output /tmp/demo_val

Writes `index.html` and its PNG images into `--output` (default: the first
workdir's `report/`); the page opens from the file system: no server, no script, no
network. It shows:
  1. the training curves of `metrics.jsonl`: the loss terms, the learning rate,
     the images per second (measured between log lines, evaluations left out), the
     batches' pixel accuracy, the gradient norm and the validation metrics, with
     the best step (the best/ checkpoint) marked;
  2. the scores of the best checkpoint on `--split`: one row per run (with FANet's
     SCM / FRM-high / FRM-low switches, as in the paper's Table 2), the per-class
     IoU and accuracy, a bar chart of the IoUs and the row-normalised confusion
     matrix. They are read from `WORKDIR/eval/<split>-<mode>.json` (python -m
     fanet_jax.evaluate) where it scores that checkpoint, else computed here, else
     read from `results.json`;
  3. `--images` examples: image, ground truth, each run's prediction and errors;
     the worst and best by the first run's per-image mIoU, and the rest the first
     images of a permutation drawn from `--seed` that are not among those (in the
     split's order). `per_image.csv` lists every image's mIoU. Only the shown
     images' predictions are kept; the other runs predict only those images
     unless their scores need the whole split.
  4. inside the model (report/internals.py, as python -m fanet_jax.visualize draws
     it), for the worst and the best example: a FANet's FRM maps (F, Q, R = F - Q,
     S = F * Q, output; the paper's Fig. 6), or a DenseAttentionSeg's attention
     maps per level (Fig. 7) and its contour maps of the labels and the prediction
     (Fig. 8); `--no-internals` leaves it out.
A run without a checkpoint yet gets its curves and a note saying why the rest is
missing; a workdir with neither metrics.jsonl nor a checkpoint is one line (exit 2).
Details: docs/report.md. The code: runs.py (a workdir and its scores), examples.py
(the per-image pass, the choice), figures.py, panels.py (the examples' pictures),
internals.py (the maps inside the model), page.py (the HTML), __main__.py (the
options).
"""
