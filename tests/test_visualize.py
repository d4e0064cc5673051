import numpy as np
from monai.data import MetaTensor
from PIL import Image
import torch

from tskd_components.visualize import SaveOverlayd, overlay, to_display


def test_overlay_colours_only_foreground():
    image = np.full((4, 6, 3), 0.5, np.float32)
    mask = np.zeros((4, 6), np.int64)
    mask[1, 2] = 1
    mask[2, 3] = 2
    rgb = overlay(image, mask, alpha=0.5)
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (127, 127, 127) or tuple(rgb[0, 0]) == (128, 128, 128)
    assert rgb[1, 2, 0] > rgb[1, 2, 1] and rgb[2, 3, 1] > rgb[2, 3, 0]  # class 1 red, class 2 green


def test_to_display_handles_grey_and_range():
    out = to_display(np.linspace(-3, 5, 16, dtype=np.float32).reshape(1, 4, 4))
    assert out.shape == (4, 4, 3) and out.min() >= 0 and out.max() <= 1


def test_save_overlay_resizes_prediction_to_the_source(hc18, tmp_path):
    source = sorted((hc18 / "images").glob("*.png"))[0]
    width, height = Image.open(source).size
    pred = torch.zeros(2, 32, 32)
    pred[1, 8:24, 8:24] = 1  # one-hot: square of class 1
    image = MetaTensor(torch.zeros(3, 32, 32), meta={"filename_or_obj": str(source)})
    SaveOverlayd("pred", output_dir=str(tmp_path))({"image": image, "pred": pred})
    out = np.array(Image.open(tmp_path / f"{source.stem}_overlay.png"))
    assert out.shape == (height, width, 3)
    centre = out[height // 2, width // 2].astype(int)
    assert centre[0] > centre[1] + 20  # red tint in the middle, none in the corner
    assert abs(int(out[2, 2, 0]) - int(out[2, 2, 1])) < 5
