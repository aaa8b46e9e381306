"""Frames per second of `python -m fanet_jax.predict` on a folder of 1920x1080 frames,
and the share of that time the model waited for files (reading, writing).

  python scripts/predict_speed.py                       # zerowaste_fanet_tiny, 12 frames
  python scripts/predict_speed.py --frames 24 --batch 2 --no-vis

The frames are synthetic conveyor scenes of ZeroWaste-f's size (the synthetic waste
renderer, two scenes side by side); the model is the experiment's with random
variables (speed does not depend on their values), through the same command a user
runs: the experiment's test pipeline (for zerowaste_fanet_tiny: rescaled to 910x512),
whole-image inference, the class map, the overlay and (`--probs`) the probabilities
written by threads while the model runs. Compile time is reported apart. Figures go
into docs/performance.md with the date and the machine.
"""
import argparse
import functools
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--experiment', default='zerowaste_fanet_tiny')
  parser.add_argument('--frames', type=int, default=12)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--probs', action='store_true')
  parser.add_argument('--no-vis', dest='vis', action='store_false')
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np
  from absl import flags
  from PIL import Image

  from fanet_jax import config as config_lib
  from fanet_jax import predict, pretrained, trainer
  from fanet_jax.runtime import configure_process
  from input_pipeline import waste_renderer
  flags.FLAGS.mark_as_parsed()
  configure_process()

  work = tempfile.mkdtemp(prefix='predict-speed-')
  frames = os.path.join(work, 'frames')
  os.makedirs(frames)
  rng = np.random.default_rng(0)
  for i in range(args.frames):
    left, right = (waste_renderer.render_example(rng, 1080)[0] for _ in range(2))
    frame = np.concatenate([left, right], axis=1)[:, :1920]
    Image.fromarray(frame).save(os.path.join(frames, f'frame{i:04d}.png'))

  config = config_lib.load_experiment(args.experiment)
  model = trainer.build_model(config)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 64, 64, config.image_channels)))
  weights = os.path.join(work, 'weights')
  pretrained.save_variables(weights, variables)

  argv = ['--experiment', args.experiment, '--weights', weights, '--input', frames,
          '--output', os.path.join(work, 'out'), '--batch', str(args.batch),
          '--threads', str(args.threads)] + ['--probs'] * args.probs + (
              [] if args.vis else ['--no-vis'])
  result = predict.predict(predict.parse_args(argv))
  print(f'{args.experiment}, {args.frames} frames of 1920x1080, batch {args.batch}, '
        f'{args.threads} reading and {args.threads} writing threads, outputs '
        f'{"/, ".join(result["outputs"])}/, {os.cpu_count()} cores:')
  print(f'  {result["written"] / result["seconds"]:.3f} frames/s '
        f'({result["seconds"] / result["written"]:.2f} s a frame); waiting for files '
        f'{100 * result["waited"] / result["seconds"]:.1f}% of the time; compile '
        f'{result["compile_seconds"]:.1f} s (not counted)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
