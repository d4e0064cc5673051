"""Diffusion synthesis of transfer-set images (diffusers), transfer-set builder and quality report."""

from .colour import MatchChannelStatsd, assign_references, channel_statistics, colour_matched, match_channel_statistics, match_target_statistics
from .diffusion import (
    UNET_WEIGHTS,
    DiffusionStep,
    EMAWeights,
    assert_no_test_images,
    build_unet,
    diffusion_preprocessing,
    init_unet,
    load_unet,
    sample,
    save_unet,
    synthesis_datalist,
    write_pngs,
)
from .report import quality_report, report_for_model
from .samples import SAMPLES_MANIFEST, draw_samples, read_samples
from .transfer_set import MANIFEST, build_transfer_set
