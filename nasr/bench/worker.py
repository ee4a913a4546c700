"""One worker process of `nasr bench build`: python -m nasr.bench.worker WORKDIR INDEX COUNT."""

import os
import sys


def main(argv: list[str]) -> int:
  """Pin this process to its core (CPU builds), train its share of the runs; return 0."""
  core = os.environ.get("NASR_BENCH_CORE")
  if core is not None:
    os.sched_setaffinity(0, {int(core)})
  from absl import logging  # noqa: PLC0415 - after the pinning, so JAX's threads inherit it

  from nasr.bench import build  # noqa: PLC0415

  logging.set_verbosity(logging.INFO)
  logging.use_absl_handler()
  workdir, index, count = argv[1], int(argv[2]), int(argv[3])
  build.work(workdir, index, count)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
