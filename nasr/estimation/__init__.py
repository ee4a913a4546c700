"""Scoring candidates: train state and steps, losses, metrics (PSNR/SSIM) and cost (params, MACs)."""

from nasr.estimation import cost, darts, evaluate, losses, metrics, ranking, train
from nasr.estimation.cost import count_macs, count_params, macs_per_pixel
from nasr.estimation.darts import DartsState, make_bilevel_step
from nasr.estimation.evaluate import score_images
from nasr.estimation.losses import LOSSES
from nasr.estimation.metrics import psnr, psnr_jax, ssim
from nasr.estimation.train import TrainState, create_train_state, make_train_step

__all__ = [
  "LOSSES",
  "DartsState",
  "TrainState",
  "cost",
  "count_macs",
  "count_params",
  "create_train_state",
  "darts",
  "evaluate",
  "losses",
  "macs_per_pixel",
  "make_bilevel_step",
  "make_train_step",
  "metrics",
  "psnr",
  "psnr_jax",
  "ranking",
  "score_images",
  "ssim",
  "train",
]
