
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from tests.conftest import real_dataset, root_cause
from tskd_components.data import ConvertChannelsd, DatasetError, augmentation, load_datalist, preprocessing
from tskd_components.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("name,classes", [("hc18", 2), ("acdc", 4), ("drive", 2)])
@pytest.mark.parametrize("channels", [1, 3])
def test_preprocessing_gives_square_normalised_tensors(name, classes, channels):
    item = load_datalist(real_dataset(name), "train")[0]
    out = preprocessing(64, num_classes=classes, channels=channels)(item)
    assert out["image"].shape == (channels, 64, 64) and out["label"].shape == (1, 64, 64)
    assert out["image"].dtype == torch.float32
    labels = torch.unique(out["label"])
    assert torch.equal(labels, labels.round()) and labels.max() < classes and labels.max() > 0
    # [0, 1] then ImageNet statistics: the darkest pixel maps to -mean/std
    lo = -np.array(IMAGENET_MEAN if channels == 3 else [np.mean(IMAGENET_MEAN)]) / np.array(IMAGENET_STD if channels == 3 else [np.mean(IMAGENET_STD)])
    mins = out["image"].amin(dim=(1, 2)).numpy()
    assert np.all(mins >= lo - 1e-4) and np.allclose(mins, lo, atol=0.05)  # bilinear resize may lift the minimum a little


def test_rgb_image_to_grey_uses_luminance(hc18):
    img = MetaTensor(torch.stack([torch.ones(4, 4), torch.zeros(4, 4), torch.zeros(4, 4)]))
    out = ConvertChannelsd("image", channels=1)({"image": img})["image"]
    assert out.shape == (1, 4, 4) and torch.allclose(out, torch.full((1, 4, 4), 0.299))


def test_rgba_drops_alpha_and_two_channels_is_an_error(tmp_path):
    rgba = MetaTensor(torch.rand(4, 5, 5))
    assert ConvertChannelsd("image", 3)({"image": rgba})["image"].shape == (3, 5, 5)
    bad = MetaTensor(torch.rand(2, 5, 5), meta={"filename_or_obj": "odd.tif"})
    with pytest.raises(DatasetError, match="odd.tif: image has 2 channels; expected 1 .* convert it to grey or RGB"):
        ConvertChannelsd("image", 3)({"image": bad})


def test_wrong_channel_count_in_a_real_file(tmp_path, hc18):
    item = load_datalist(hc18, "train")[0]
    arr = np.array(Image.open(item["image"]))
    Image.fromarray(arr).convert("LA").save(tmp_path / "la.png")
    with pytest.raises(RuntimeError) as info:
        preprocessing(64, channels=3, with_label=False)({"image": str(tmp_path / "la.png")})
    assert isinstance(root_cause(info.value), DatasetError) and "la.png: image has 2 channels" in str(root_cause(info.value))


def test_mask_values_checked_at_load_time(tmp_path, hc18):
    item = dict(load_datalist(hc18, "train")[0])
    mask = np.array(Image.open(item["label"]))
    mask[0, 0] = 9
    Image.fromarray(mask).save(tmp_path / "m.png")
    item["label"] = str(tmp_path / "m.png")
    with pytest.raises(RuntimeError) as info:
        preprocessing(64, num_classes=2)(item)
    cause = root_cause(info.value)
    assert isinstance(cause, DatasetError) and "m.png holds label values in [0, 9]" in str(cause)


def test_intensity_window_for_ct():
    img = MetaTensor(torch.tensor([[[-1000.0, -160.0], [40.0, 2000.0]]]))
    from tskd_components.data.transforms import intensity_transform

    out = intensity_transform("image", (-160, 240))({"image": img})["image"]
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0], [0.5, 1.0]]]))


def test_augmentation_keeps_masks_as_class_indices(hc18):
    item = load_datalist(real_dataset("acdc"), "train")[0]
    pre = preprocessing(64, num_classes=4, channels=3)(item)
    aug = augmentation(prob=1.0)
    aug.set_random_state(0)
    out = aug(pre)
    assert out["image"].shape == (3, 64, 64)
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert not torch.equal(out["image"], pre["image"])


def test_nifti_slice_items_load_as_2d_images(tmp_path):
    from tests.conftest import SHARED_DATA

    vols = SHARED_DATA / "amos_ct" / "volumes"
    if not vols.is_dir():
        pytest.skip("amos_ct volumes not available")
    import nibabel as nib

    item = {"image": str(vols / "amos_0013_ct_slices.nii.gz"), "label": str(vols / "amos_0013_label_amos15.nii.gz"), "slice": 5}
    out = preprocessing(64, num_classes=16, channels=1, intensity_range=(-160, 240))(item)
    assert out["image"].shape == (1, 64, 64) and out["label"].shape == (1, 64, 64)
    ct = np.asarray(nib.load(item["image"]).dataobj[..., 5], dtype=np.float32)
    labels = np.asarray(nib.load(item["label"]).dataobj[..., 5])
    assert out["image"].meta["slice"] == 5
    assert set(torch.unique(out["label"]).tolist()) <= set(np.unique(labels).tolist())
    assert float(out["image"].min()) == pytest.approx((0 - np.mean(IMAGENET_MEAN)) / np.mean(IMAGENET_STD), abs=1e-3) and ct.min() < -160
