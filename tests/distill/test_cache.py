import json

import pytest
import torch

from tskd_components.data import load_transfer_set, preprocessing
from tskd_components.distill import StaleCacheError, TeacherCache, build_teacher_cache
from tskd_components.networks import build_lora_sam


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_lora_sam("tiny", 2, 64, random_init=True).eval()


def test_transfer_set_of_a_dataset_is_its_train_split_only(hc18):
    items = load_transfer_set(hc18)
    split = json.loads((hc18 / "split.json").read_text())
    assert [it["id"] for it in items] == split["train"]
    assert all("label" not in it for it in items)


def test_cache_round_trip_matches_the_online_teacher(teacher, hc18, tmp_path):
    items = load_transfer_set(hc18)[:5]
    pre = preprocessing(64, channels=3, with_label=False)
    build_teacher_cache(teacher, items, pre, tmp_path / "cache", "teacher-a", [1, 3], batch_size=2, shard_size=2, logits_size=32)
    cache = TeacherCache(tmp_path / "cache", teacher_id="teacher-a", layers=[1, 3])
    assert cache.ids == [it["id"] for it in items] and len(cache.meta["shards"]) == 3
    cache.verify_sources(items)
    image = pre(dict(items[4]))["image"].as_tensor()[None]
    logits, hidden = teacher.forward_with_hidden(image, [1, 3])
    target = cache[items[4]["id"]]
    assert target["logits"].shape == (2, 32, 32)
    assert torch.allclose(target["logits"], torch.nn.functional.interpolate(logits, size=(32, 32), mode="bilinear")[0], atol=2e-2)
    for cached, online in zip(target["hidden"], hidden):
        assert cached.dtype == torch.float32 and torch.allclose(cached, online[0], atol=2e-2, rtol=1e-2)


def test_stale_cache_is_refused(teacher, hc18, tmp_path):
    items = load_transfer_set(hc18)[:2]
    pre = preprocessing(64, channels=3, with_label=False)
    build_teacher_cache(teacher, items, pre, tmp_path / "c", "teacher-a", [1, 3], feature_pool=2)
    with pytest.raises(StaleCacheError, match=r"teacher teacher-a != expected teacher-b.*rebuild it with build_cache.json"):
        TeacherCache(tmp_path / "c", teacher_id="teacher-b", layers=[1, 3])
    with pytest.raises(StaleCacheError, match=r"layers \[1, 3\] != expected \[0, 1\]"):
        TeacherCache(tmp_path / "c", teacher_id="teacher-a", layers=[0, 1])
    with pytest.raises(StaleCacheError, match="built at 64 px, this run uses 128 px"):
        TeacherCache(tmp_path / "c", teacher_id="teacher-a", layers=[1, 3], image_size=128)
    cache = TeacherCache(tmp_path / "c", teacher_id="teacher-a", layers=[1, 3], image_size=64)
    assert cache[items[0]["id"]]["hidden"][0].shape == (64, 2, 2)  # pooled 4x4 -> 2x2
    with pytest.raises(StaleCacheError, match="is not in teacher cache"):
        cache.verify_sources([{"id": "other", "image": items[0]["image"]}])
    copy = tmp_path / "changed.png"
    copy.write_bytes(open(items[1]["image"], "rb").read() + b"\0")
    with pytest.raises(StaleCacheError, match="changed.png changed since teacher cache"):
        cache.verify_sources([{"id": items[1]["id"], "image": str(copy)}])
    with pytest.raises(FileNotFoundError, match="build it with bundles/tskd_distill/configs/build_cache.json"):
        TeacherCache(tmp_path / "none")


def test_frozen_mode_stores_features_only(teacher, hc18, tmp_path):
    items = load_transfer_set(hc18)[:2]
    build_teacher_cache(teacher, items, preprocessing(64, channels=3, with_label=False), tmp_path / "f", "sam", [3], mode="frozen")
    cache = TeacherCache(tmp_path / "f")
    assert not cache.has_logits and set(cache[items[0]["id"]]) == {"hidden"}


def test_rebuilding_hides_the_old_index_until_done(teacher, hc18, tmp_path):
    from tskd_components.distill import TeacherCacheWriter

    items = load_transfer_set(hc18)[:1]
    build_teacher_cache(teacher, items, preprocessing(64, channels=3, with_label=False), tmp_path / "c", "old", [3])
    writer = TeacherCacheWriter(tmp_path / "c", "new", [3])  # a rebuild that has not finished
    with pytest.raises(FileNotFoundError, match="index.json missing"):
        TeacherCache(tmp_path / "c")
    writer.close()
    assert TeacherCache(tmp_path / "c").meta["teacher_id"] == "new"


def test_truncated_cache_shard_names_the_file(teacher, hc18, tmp_path):
    items = load_transfer_set(hc18)[:2]
    build_teacher_cache(teacher, items, preprocessing(64, channels=3, with_label=False), tmp_path / "cache", "t", [1], shard_size=1)
    cache = TeacherCache(tmp_path / "cache", teacher_id="t", layers=[1])
    shard = tmp_path / "cache" / cache.meta["shards"][cache.meta["images"][items[1]["id"]]["shard"]]
    shard.write_bytes(shard.read_bytes()[:100])
    cache[items[0]["id"]]  # the intact shard still reads
    with pytest.raises(ValueError, match=rf"cannot read {shard}.*truncated"):
        cache[items[1]["id"]]
