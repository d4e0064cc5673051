import pytest

from tskd_components.networks import ViTSegmenter
from tskd_components.utils.profiling import model_cost


def test_model_cost_counts_parameters_and_flops():
    model = ViTSegmenter(64, 3, 2)
    cost = model_cost(model, 64, repeats=1)
    assert cost["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    # ViT-Tiny encoder alone is ~2 x 5.5 M params x 16 tokens; the decoder adds convolutions at full resolution
    assert 0.1 < cost["gflops"] < 5 and cost["latency_ms"] > 0
