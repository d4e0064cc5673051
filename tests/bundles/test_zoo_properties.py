"""Every bundle's training configs define MONAI's required training-workflow properties (``TrainProperties``: what the
zoo's property checks and MONAI Label's BundleTrainTask read), or its ``metadata.json`` says, per config, which one
it lacks and why (``missing_train_properties``); a reason for a property the config does define is stale."""

import json

import pytest
from monai.bundle import ConfigParser
from monai.bundle.properties import TrainProperties

from tests.bundles.conftest import BUNDLES

# each trainable config with the overlays it runs with (train.json alone is not runnable where a method overlay is required)
TRAINING_CONFIGS = [
    ("tskd_student_segmentation", ["train.json"]),
    ("tskd_sam_lora", ["train.json"]),
    ("tskd_sam_lora", ["train.json", "pretrain.json"]),
    ("tskd_distill", ["train.json", "ts_kd.json"]),
    ("tskd_distill", ["train.json", "ta_kd.json"]),
    ("tskd_ssl_pretrain", ["train.json", "mae.json"]),
    ("tskd_ssl_pretrain", ["train.json", "mocov3.json"]),
    ("tskd_synthesis", ["train.json"]),
]


def missing_train_properties(parser: ConfigParser) -> set[str]:
    return {name for name, prop in TrainProperties.items() if prop["required"] and prop["id"].replace("::", "#") not in parser}


@pytest.mark.parametrize("bundle,configs", TRAINING_CONFIGS, ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_training_configs_define_the_train_properties_or_say_why_not(bundle, configs):
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / c) for c in configs])
    missing = missing_train_properties(parser)
    meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    declared = meta.get("missing_train_properties", {}).get(configs[-1], {})
    assert missing == set(declared), f"{bundle}/{configs[-1]}: lacks {sorted(missing)}, metadata explains {sorted(declared)}"
    assert all(len(reason) > 20 for reason in declared.values())


def test_a_config_without_an_inferer_is_caught():
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "tskd_student_segmentation" / "configs" / "train.json"))
    del parser["train"]["inferer"]
    assert missing_train_properties(parser) == {"train_inferer"}
