"""The model zoo's CI checks (``ci/verify_bundle.py`` of Project-MONAI/model-zoo, ``verify(bundle, mode="full")``), run
offline on an unpacked bundle in a process where ``tskd_components`` cannot be imported, as on the zoo's runners.

    python -P tests/zoo_ci.py <models_path> <bundle_name> <metadata schema> <dataset folder for the training workflow>

Each step names the function of ``verify_bundle.py`` it mirrors; two steps go further than the zoo (marked). The
schema is passed as a file because the one named in ``metadata.json`` cannot be downloaded here. Prints one line per
passed step; any failure raises.
"""

import os
import sys

sys.modules["tskd_components"] = None  # `import tskd_components` now fails: the bundle must carry its code


def verify(models_path: str, bundle: str, schema: str, dataset_dir: str) -> None:
    import json

    import torch
    from monai.bundle import ckpt_export, create_workflow, download_large_files, verify_metadata, verify_net_in_out
    from monai.bundle.properties import InferProperties, MetaProperties, TrainProperties

    bundle_path = os.path.join(models_path, bundle)
    sys.path = [bundle_path] + sys.path  # verify(): "add bundle path to ensure custom code can be used"
    configs = os.path.join(bundle_path, "configs")
    meta_file, inference = os.path.join(configs, "metadata.json"), os.path.join(configs, "inference.json")

    # verify_bundle_directory: download large files first, then the necessary and the preferred files
    download_large_files(bundle_path=bundle_path)  # finds large_files.yml (MONAI 1.6 fails when given large_file_name)
    for file in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert os.path.isfile(os.path.join(bundle_path, file)), f"verify_bundle_directory: {file} is missing"
    print("verify_bundle_directory: ok")

    # verify_version_changes: a version, a changelog, the version in the changelog
    metadata = json.loads(open(meta_file).read())
    assert metadata["version"] in metadata["changelog"], "verify_version_changes: version not in changelog"
    print("verify_version_changes: ok")

    # verify_metadata_format: verify_metadata against the metadata schema
    verify_metadata(meta_file=meta_file, filepath=schema)
    print("verify_metadata_format: ok")

    # verify_bundle_properties: an inference workflow with the meta and inference properties, none missing
    workflow = create_workflow(workflow_type="inference", bundle_root=bundle_path, config_file=inference, meta_file=meta_file,
                               logging_file=os.path.join(configs, "logging.conf"))
    workflow.properties = {**MetaProperties, **InferProperties}
    assert not workflow.check_properties(), f"verify_bundle_properties: {workflow.check_properties()}"
    print("verify_bundle_properties (inference): ok")

    # beyond the zoo (it leaves training to unit tests): the training workflow's properties, which MONAI Label's
    # BundleTrainTask reads, on a dataset given as a user gives theirs
    workflow = create_workflow(workflow_type="train", bundle_root=bundle_path, config_file=os.path.join(configs, "train.json"),
                               meta_file=meta_file, logging_file=os.path.join(configs, "logging.conf"), dataset_dir=dataset_dir,
                               num_labeled=4, image_size=64)
    assert not workflow.check_properties(), f"train properties: {workflow.check_properties()}"
    assert set(TrainProperties) <= set(workflow.properties)
    print("train workflow properties (beyond the zoo): ok")

    # verify_data_shape: verify_net_in_out on network_def
    verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=inference, bundle_root=bundle_path)
    print("verify_data_shape: ok")

    # verify_torchscript: ckpt_export in its default (scripted) mode, then load what it wrote
    common = dict(net_id="network_def", ckpt_file=os.path.join(bundle_path, "models", "model.pt"), meta_file=meta_file,
                  config_file=inference, bundle_root=bundle_path)
    ckpt_export(filepath=os.path.join(bundle_path, "models", "verify_model.ts"), **common)
    torch.jit.load(os.path.join(bundle_path, "models", "verify_model.ts"))
    # beyond the zoo: the traced export too
    size = metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
    channels = metadata["network_data_format"]["inputs"]["image"]["num_channels"]
    ckpt_export(filepath=os.path.join(bundle_path, "models", "verify_traced.ts"), use_trace=True, input_shape=[1, channels, *size], **common)
    torch.jit.load(os.path.join(bundle_path, "models", "verify_traced.ts"))
    print("verify_torchscript (scripted and traced): ok")


if __name__ == "__main__":
    verify(*sys.argv[1:5])
