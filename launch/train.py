"""Train an SR network: python -m launch.train --config=configs/train.py:tiny --workdir=W."""

from nasr import experiment

from . import common


def main(config, workdir):
  """Train and print the final validation result."""
  result = experiment.train(config, workdir)
  val = result.get("val") or {}
  psnr, bicubic = val.get("psnr", float("nan")), result["val_bicubic"]["psnr"]
  print(
    f"trained {result['step']} steps, {result['params']:,} parameters; validation PSNR "
    f"{psnr:.4f} dB, SSIM {val.get('ssim', float('nan')):.4f} "
    f"(bicubic {bicubic:.4f} dB, gain {psnr - bicubic:+.2f} dB)"
  )


def cli() -> None:
  """Run the launcher on sys.argv (python -m launch.train, or `nasr train`)."""
  common.run(main)


if __name__ == "__main__":
  cli()
