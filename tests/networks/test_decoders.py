"""Decoders behind one interface: image + four hidden maps -> logits at the image size."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tskd_components.networks import ViTSegmenter
from tskd_components.networks.decoders import DECODERS, create_decoder


def decoder_gflops(name: str, size: int) -> float:
    decoder = create_decoder(name, 3, 192, 2).eval()
    image, hidden = torch.randn(1, 3, size, size), [torch.randn(1, 192, size // 16, size // 16) for _ in range(4)]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        decoder(image, hidden)
    return counter.get_total_flops() / 1e9


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_every_decoder_gives_logits_at_the_image_size_and_scripts(name):
    model = ViTSegmenter(image_size=64, num_classes=3, depth=4, decoder=name, feature_size=8)
    x = torch.randn(2, 3, 64, 64)
    logits, hidden = model.forward_with_hidden(x)
    assert logits.shape == (2, 3, 64, 64)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())  # every decoder weight is used
    model.eval()
    assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-5)


def test_the_light_decoder_costs_a_fraction_of_unetrs_at_256_px():
    light, unetr = decoder_gflops("light", 256), decoder_gflops("unetr", 256)
    assert light < 0.5 and light < unetr / 10, (light, unetr)


def test_an_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="unknown decoder 'fpn'; choose from"):
        create_decoder("fpn", 3, 192, 2)
