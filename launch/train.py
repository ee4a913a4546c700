"""Train an SR network: python -m launch.train --config=configs/train.py:tiny --workdir=W."""

from launch import common
from nasr import experiment


def main(config, workdir):
  """Train and print the final validation result."""
  result = experiment.train(config, workdir)
  val = result.get("val") or {}
  print(
    f"trained {result['step']} steps, {result['params']:,} parameters; validation PSNR "
    f"{val.get('psnr', float('nan')):.4f} dB, SSIM {val.get('ssim', float('nan')):.4f}"
  )


if __name__ == "__main__":
  common.run(main)
