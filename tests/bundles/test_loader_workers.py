"""The data loaders of every training workflow (those set by the config's ``num_workers``) keep their worker processes
between epochs when they have any (GPU runs: short epochs would otherwise start new workers each time) and load in
the training process by default."""

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
CONFIGS = sorted(p for p in BUNDLES.glob("*/configs/*.json") if '"num_workers": "@num_workers"' in p.read_text())


def loader_paths(node, path=""):
    """Config ids of the ``DataLoader`` blocks in ``node`` whose workers the config's ``num_workers`` sets."""
    if isinstance(node, dict):
        if str(node.get("_target_", "")).endswith("DataLoader") and node.get("num_workers") == "@num_workers":
            yield path
        for key, value in node.items():
            yield from loader_paths(value, f"{path}#{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from loader_paths(value, f"{path}#{i}")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_loaders_keep_their_workers_only_when_they_have_some(config):
    paths = list(loader_paths(json.loads(config.read_text())))
    assert paths
    for workers, persistent in ((0, False), (2, True)):
        parser = ConfigParser(json.loads(config.read_text()))
        parser["num_workers"] = workers
        for path in paths:
            assert parser.get_parsed_content(f"{path}#num_workers") == workers, path
            assert parser.get_parsed_content(f"{path}#persistent_workers") is persistent, path
