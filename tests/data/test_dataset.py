import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA, real_dataset
from tskd_components.data import (
    DatasetError,
    labeled_datalist,
    load_datalist,
    load_unlabeled,
    read_dataset_info,
    select_labeled,
    unlabeled_train_datalist,
    validation_datalist,
)


@pytest.mark.parametrize("name", ["hc18", "acdc", "drive", "ph2", "kvasir_seg", "amos_ct"])
def test_reads_every_real_dataset(name):
    root = real_dataset(name)
    info = read_dataset_info(root)
    split = json.loads((root / "split.json").read_text())
    items = load_datalist(root, "train")
    assert [it["id"] for it in items] == split["train"]
    assert all(it["image"].endswith(".png") and it["label"].endswith(".png") for it in items)
    assert info.num_classes == len(json.loads((root / "dataset.json").read_text())["classes"])


def test_empty_val_split_gives_no_validation_items():
    root = real_dataset("amos_ct")
    with pytest.warns(UserWarning, match="no 'val' ids"):
        assert validation_datalist(root) == []


def test_label_budget_is_deterministic_nested_and_recorded(hc18, tmp_path):
    ids = [it["id"] for it in load_datalist(hc18, "train")]
    a = select_labeled(ids, 10, seed=0)
    assert a == select_labeled(list(reversed(ids)), 10, seed=0)  # order of the input does not matter
    assert set(a) < set(select_labeled(ids, 20, seed=0))  # budgets nest
    assert a != select_labeled(ids, 10, seed=1)
    items = labeled_datalist(hc18, 10, seed=0, output_dir=tmp_path)
    record = json.loads((tmp_path / "labeled_ids.json").read_text())
    assert record["ids"] == sorted(a) == sorted(it["id"] for it in items)
    assert record["seed"] == 0 and record["num_labeled"] == 10
    rest = unlabeled_train_datalist(hc18, 10, seed=0)
    assert len(rest) == len(ids) - 10 and not set(a) & {it["id"] for it in rest}
    assert all("label" not in it for it in rest)


def test_budget_larger_than_train_split_is_refused(hc18):
    n = len(load_datalist(hc18, "train"))
    with pytest.raises(DatasetError, match=f"num_labeled={n + 1} exceeds the {n}"):
        labeled_datalist(hc18, n + 1)


def test_unlabeled_reader_lists_images(hc18):
    items = load_unlabeled(hc18 / "images")
    assert len(items) == len(list((hc18 / "images").glob("*.png")))
    assert all(set(it) == {"id", "image"} for it in items)
    assert load_unlabeled(hc18) == items  # a dataset folder works too (its images/ subfolder)


def test_nifti_volumes_become_slices(tmp_path):
    vols = SHARED_DATA / "amos_ct" / "volumes"
    if not vols.is_dir():
        pytest.skip("amos_ct volumes not available")
    root = tmp_path / "amos_nifti"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "p1.nii.gz").symlink_to(vols / "amos_0013_ct_slices.nii.gz")
    (root / "masks" / "p1.nii.gz").symlink_to(vols / "amos_0013_label_amos15.nii.gz")
    (root / "split.json").write_text(json.dumps({"train": ["p1"], "val": [], "test": []}))
    classes = {str(i): f"organ {i}" for i in range(16)}
    (root / "dataset.json").write_text(json.dumps({"name": "amos_nifti", "classes": classes, "image_channels": 1}))
    items = load_datalist(root, "train")
    depth = nib.load(str(vols / "amos_0013_ct_slices.nii.gz")).shape[-1]
    assert [it["slice"] for it in items] == list(range(depth))
    assert items[3]["id"] == "p1_z003"


# --- bad input: each gets a message naming the file and the fix ---------------------------------------


def test_missing_mask_names_the_file(hc18, small_copy):
    root = small_copy(hc18)
    victim = json.loads((root / "split.json").read_text())["train"][1]
    (root / "masks" / f"{victim}.png").unlink()
    with pytest.raises(DatasetError, match=rf"mask for id '{victim}' missing: expected .*masks/{victim}"):
        load_datalist(root, "train")


def test_missing_image_names_the_file(hc18, small_copy):
    root = small_copy(hc18)
    victim = json.loads((root / "split.json").read_text())["train"][0]
    (root / "images" / f"{victim}.png").unlink()
    with pytest.raises(DatasetError, match=rf"image for id '{victim}' not found.*remove the id from split.json"):
        load_datalist(root, "train")


def test_mask_size_mismatch_names_both_files(hc18, small_copy):
    root = small_copy(hc18)
    victim = json.loads((root / "split.json").read_text())["train"][2]
    mask = root / "masks" / f"{victim}.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask)
    with pytest.raises(DatasetError, match=rf"mask .*{victim}.png has size \(10, 12\) but image .*{victim}.png has size"):
        load_datalist(root, "train")


def test_mask_labels_outside_classes(hc18, small_copy):
    root = small_copy(hc18)
    victim = json.loads((root / "split.json").read_text())["train"][0]
    mask_path = root / "masks" / f"{victim}.png"
    mask = np.array(Image.open(mask_path))
    mask[:5, :5] = 7
    Image.fromarray(mask).save(mask_path)
    with pytest.raises(DatasetError, match=rf"{victim}.png holds label values \[7\] not among the classes \[0, 1\]"):
        load_datalist(root, "train")


def test_empty_split(hc18, small_copy):
    root = small_copy(hc18)
    split = json.loads((root / "split.json").read_text())
    split["test"] = []
    (root / "split.json").write_text(json.dumps(split))
    with pytest.raises(DatasetError, match="split 'test' is empty"):
        load_datalist(root, "test")


def test_unreadable_file(hc18, small_copy):
    root = small_copy(hc18)
    victim = json.loads((root / "split.json").read_text())["val"][0]
    (root / "images" / f"{victim}.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=rf"cannot read .*{victim}.png.*replace it with a valid image"):
        load_datalist(root, "val")


def test_missing_dataset_json_and_folder(hc18, small_copy, tmp_path):
    root = small_copy(hc18)
    (root / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        load_datalist(root, "train")
    with pytest.raises(DatasetError, match="does not exist; pass --dataset_dir"):
        read_dataset_info(tmp_path / "nowhere")


def test_an_id_in_two_splits_is_refused(hc18, small_copy):
    root = small_copy(hc18)
    split = json.loads((root / "split.json").read_text())
    split["test"].append(split["train"][0])
    (root / "split.json").write_text(json.dumps(split))
    with pytest.raises(DatasetError, match=rf"ids in both 'train' and 'test' \(leakage\): \['{split['train'][0]}'\]"):
        load_datalist(root, "train")


def test_duplicate_ids_are_refused(hc18, small_copy):
    root = small_copy(hc18)
    split = json.loads((root / "split.json").read_text())
    split["train"] += split["train"][:2]
    (root / "split.json").write_text(json.dumps(split))
    with pytest.raises(DatasetError, match="ids listed more than once in 'train'"):
        labeled_datalist(root, 4, 0)


def test_classes_with_gaps_and_a_word_for_channels_are_refused_with_the_right_cause(hc18, small_copy):
    root = small_copy(hc18)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps(meta | {"classes": {"0": "bg", "1": "a", "5": "b"}}))
    with pytest.raises(DatasetError, match=r"class indices must run 0..2 without gaps, got \[0, 1, 5\]"):
        read_dataset_info(root)
    (root / "dataset.json").write_text(json.dumps(meta | {"image_channels": "rgb"}))
    with pytest.raises(DatasetError, match="'image_channels' must be the number 1 \\(grey\\) or 3 \\(RGB\\), got 'rgb'"):
        read_dataset_info(root)
