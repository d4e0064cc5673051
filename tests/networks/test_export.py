"""Every registered student with every decoder exports as the zoo and deployment need it: traced TorchScript and
ONNX (ONNX Runtime) with the PyTorch model's outputs, and ``verify_net_in_out`` through the student bundle's
``inference.json`` (scripted TorchScript: ``test_student.py`` and ``test_decoders.py``)."""

import itertools

import numpy as np
import onnxruntime
import pytest
import torch
from monai.bundle import verify_net_in_out

from tests.conftest import REPO
from tests.networks.test_student import TEST_SIZE
from tskd_components.networks import create_student, list_students
from tskd_components.networks.decoders import DECODERS

VARIANTS = list(itertools.product(list_students(), sorted(DECODERS)))
CONFIGS = REPO / "bundles" / "tskd_student_segmentation" / "configs"


@pytest.mark.parametrize("name,decoder", VARIANTS)
def test_traced_and_onnx_exports_match_pytorch(name, decoder, tmp_path):
    model = create_student(name, image_size=64, num_classes=3, decoder=decoder, **TEST_SIZE[name]).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        traced = torch.jit.trace(model, x[:1])
        assert torch.allclose(traced(x), reference, atol=1e-4)
    torch.onnx.export(model, (x[:1],), str(tmp_path / "m.onnx"), input_names=["image"], output_names=["logits"])  # batch 1, as deployed
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"image": x[:1].numpy()})[0] - reference[:1].numpy()).max() < 1e-4


@pytest.mark.parametrize("name,decoder", VARIANTS)
def test_every_variant_passes_verify_net_in_out_through_the_bundle(name, decoder):
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                      student_name=name, decoder=decoder)
