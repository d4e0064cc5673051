"""Self-supervised baselines for the student encoder: MAE and MoCo v3."""

from .engine import SSLStep, TwoViewsd, view_augmentation
from .mae import MAE, patchify, random_masking
from .mocov3 import MoCoV3, cosine_momentum
