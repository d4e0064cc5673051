"""Export a trained student bundle to TorchScript and ONNX with ``monai.bundle`` and check that both give the
PyTorch model's outputs (ONNX Runtime on CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from monai.bundle import ConfigParser, ckpt_export, onnx_export

from .utils.io import atomic_write, write_json
from .utils.weights import file_digest, read_state_dict


def export_with_parity(bundle_root: str | Path, batch_size: int = 1, seed: int = 0) -> dict:
    """Write ``models/model.ts`` and ``models/model.onnx`` from ``models/model.pt`` of the bundle at
    ``bundle_root`` (its ``configs/inference.json`` and ``metadata.json``), then compare the outputs of both with the
    PyTorch network on a seeded random input; writes and returns ``models/export_parity.json``."""
    root = Path(bundle_root)
    configs, models = root / "configs", root / "models"
    common = {"net_id": "network_def", "ckpt_file": str(models / "model.pt"), "meta_file": str(configs / "metadata.json"),
              "config_file": str(configs / "inference.json"), "bundle_root": str(root)}
    if not (models / "model.pt").is_file():
        raise FileNotFoundError(f"{models / 'model.pt'} not found; train the bundle before exporting it")
    parser = ConfigParser()
    parser.read_meta(str(configs / "metadata.json"))
    parser.read_config(str(configs / "inference.json"))
    parser["bundle_root"] = str(root)
    size = parser.get_parsed_content("image_size")
    shape = [batch_size, parser.get_parsed_content("in_channels"), size, size]
    ckpt_export(filepath=str(models / "model.ts"), input_shape=shape, **common)  # scripted (the zoo's default mode)
    onnx_export(filepath=str(models / "model.onnx"), use_trace=True, input_shape=shape, **common)

    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(models / "model.pt", map_location="cpu", weights_only=True))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference = network(x).numpy()
        scripted = torch.jit.load(str(models / "model.ts"), map_location="cpu")(x).numpy()
    session = onnxruntime.InferenceSession(str(models / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    report = {
        "input_shape": shape,
        "torchscript": "torch.jit.script",
        "torchscript_max_abs_diff": float(np.abs(scripted - reference).max()),
        "onnx_max_abs_diff": float(np.abs(onnx_out - reference).max()),
        "onnxruntime": onnxruntime.__version__,
    }
    write_json(models / "export_parity.json", report)
    return report


def write_input_size(configs: str | Path, image_size: int, in_channels: int, classes: dict[int, str]) -> None:
    """Record the size a student was trained at in its bundle: ``metadata.json``'s ``network_data_format`` and the
    ``image_size`` / ``in_channels`` / ``num_classes`` of ``inference.json`` (which states them itself, since MONAI
    Label's BundleInferTask reads it without the metadata)."""
    configs = Path(configs)
    meta = json.loads((configs / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    fmt["inputs"]["image"].update(spatial_shape=[image_size] * 2, num_channels=in_channels)
    fmt["outputs"]["pred"].update(spatial_shape=[image_size] * 2, num_channels=len(classes),
                                  channel_def={str(k): v for k, v in sorted(classes.items())})
    write_json(configs / "metadata.json", meta, indent=4)
    inference = json.loads((configs / "inference.json").read_text())
    inference.update(image_size=image_size, in_channels=in_channels, num_classes=len(classes))
    write_json(configs / "inference.json", inference, indent=4)


ZOO_FILE_LIMIT_MB = 25.0  # the model zoo's largest file in a bundle; bigger weights go through large_files.yml only
SAMPLE_IMAGES = 4  # test-split images shipped in sample_data/images, the default input of the packaged inference.json


def package_bundle(bundle_root: str | Path, output_dir: str | Path, run_dir: str | Path, method: str = "scratch",
                   teacher: str = "none", weights_url: str = "", embed_limit_mb: float = ZOO_FILE_LIMIT_MB) -> Path:
    """Zip a trained ``tskd_student_segmentation`` as a self-contained model-zoo bundle (``<name>/configs``,
    ``scripts``, ``docs``, ``LICENSE``, ``data_license.txt``, ``large_files.yml``) and return the zip's path.

    ``metadata.json`` says what was trained: dataset, label count, seed, pre-training ``method``, ``teacher``, test
    metrics (from ``run_dir/eval_test/metrics.json`` when present), input size and classes. Every config calls the
    code copied into ``scripts/`` (see :mod:`.bundle_scripts`) and ``required_packages_version`` no longer names
    ``tskd``. ``inference.json`` reads ``sample_data/images`` by default (the first :data:`SAMPLE_IMAGES` test-split
    images of the training dataset); the training configs' ``dataset_dir`` is the zoo's ``/workspace/data/<dataset>``
    placeholder.

    The weights are referenced by ``large_files.yml`` (path, URL, SHA-256; ``python -m monai.bundle
    download_large_files --bundle_path <bundle>`` fetches and checks them): ``weights_url`` is where
    ``models/model.pt`` will be hosted; without it, the URL is the ``file://`` path of the copy written beside the zip
    (``<name>_model.pt``, the file to upload). The zip also holds ``models/model.pt`` itself when it is under
    ``embed_limit_mb``."""
    import shutil

    from .bundle_scripts import self_contained, write_scripts
    from .data import load_datalist, read_dataset_info
    from .networks.student_weights import trained_decoder
    from .utils.run_record import package_versions

    root, run, out = Path(bundle_root), Path(run_dir), Path(output_dir)
    weights = root / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found; train the bundle before packaging it")
    config = json.loads((run / "config.resolved.json").read_text())
    info = read_dataset_info(config["dataset_dir"])
    name = root.resolve().name
    stage = out / "staging" / name
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(root / "configs", stage / "configs")
    write_scripts(stage, origin=package_versions().get("tskd", ""))
    for image in [item["image"] for item in load_datalist(config["dataset_dir"], "test")][:SAMPLE_IMAGES]:
        (stage / "sample_data" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, stage / "sample_data" / "images" / Path(image).name)
    for file in (stage / "configs").glob("*.json"):
        if file.name != "metadata.json":
            text = json.loads(file.read_text())
            if "dataset_dir" in text:  # inference runs on the shipped test images; training needs the user's dataset
                text["dataset_dir"] = "$@bundle_root + '/sample_data'" if file.name == "inference.json" else f"/workspace/data/{info.name}"
            file.write_text(self_contained(json.dumps(text, indent=4)))
    shutil.copytree(root / "docs", stage / "docs")
    shutil.copy(root / "LICENSE", stage / "LICENSE")
    (stage / "models").mkdir()
    hosted = out / f"{name}_model.pt"
    shutil.copy(weights, hosted)
    (stage / "large_files.yml").write_text(f'large_files:\n  - path: "models/model.pt"\n    url: "{weights_url or hosted.resolve().as_uri()}"\n'
                                          f'    hash_val: "{file_digest(weights)}"\n    hash_type: "sha256"\n')
    if weights.stat().st_size < embed_limit_mb * 2**20:
        shutil.copy(weights, stage / "models" / "model.pt")
    provenance = Path(config["dataset_dir"]) / "PROVENANCE.md"
    (stage / "data_license.txt").write_text(
        f"The weights in this bundle were trained on {info.name}; its source and terms, from the dataset's PROVENANCE.md:\n\n"
        + (provenance.read_text() if provenance.is_file() else f"(no PROVENANCE.md in {config['dataset_dir']}: the data's terms are unknown)\n"))
    write_input_size(stage / "configs", config["image_size"], config["in_channels"], info.classes)
    # fine-tuning and inference build the network the weights were trained as (runs before the resolved config named
    # the decoder: the one whose weights model.pt holds)
    config.setdefault("decoder", trained_decoder(read_state_dict(weights)))
    trained = {k: config[k] for k in ("student_name", "decoder", "image_size", "in_channels") if config.get(k)}
    for file in ("inference.json", "train.json"):
        if (stage / "configs" / file).is_file():
            write_json(stage / "configs" / file, json.loads((stage / "configs" / file).read_text()) | trained, indent=4)
    meta = json.loads((stage / "configs" / "metadata.json").read_text())
    meta["training"] = {"dataset": info.name, "modality": info.modality, "num_labeled": config["num_labeled"], "seed": config["seed"],
                        "method": method, "teacher": teacher, "initial_weights": config.get("initial_weights") or "random init"}
    if "student" in meta:  # the architecture the weights were trained as
        grid = int(config["image_size"]) // int(meta["student"]["patch_size"])
        meta["student"].update(decoder=config["decoder"] or meta["student"]["decoder"], token_grid=[grid, grid])
        if config.get("student_name", "vit_tiny") != "vit_tiny":
            meta["student"]["encoder"] = config["student_name"]
    meta["required_packages_version"].pop("tskd", None)  # its code travels in scripts/
    metrics = run / "eval_test" / "metrics.json"
    if metrics.is_file():
        meta["eval_metrics"] = {k: v["mean"] if "mean" in v else v["total"] for k, v in json.loads(metrics.read_text())["metrics"].items()}
    write_json(stage / "configs" / "metadata.json", meta, indent=4)
    archive = shutil.make_archive(str(out / name), "zip", root_dir=stage.parent, base_dir=name)
    shutil.rmtree(stage.parent)
    return Path(archive)


def student_bundle_from_stage(stage_dir: str | Path, bundle_root: str | Path) -> dict[str, Any]:
    """Copy the repository's student bundle to ``bundle_root`` with the weights of a fine-tune stage of ``tskd
    experiment`` / ``pipeline`` (``models/model.pt`` and ``run/config.resolved.json``), its ``inference.json`` set to
    the network they were trained as (student, decoder, input size, channels, classes); returns the stage's resolved
    training config (its ``decoder`` read from the weights for runs from before the config named it)."""
    import shutil

    from .data import read_dataset_info
    from .networks.student_weights import trained_decoder
    from .pipeline.stages import bundles_dir

    stage, root = Path(stage_dir), Path(bundle_root)
    weights, resolved = stage / "models" / "model.pt", stage / "run" / "config.resolved.json"
    if not weights.is_file() or not resolved.is_file():
        raise FileNotFoundError(f"{stage} is not a finished fine-tune stage (needs models/model.pt and run/config.resolved.json); "
                                "pass a folder such as <run-dir>/<dataset>/finetune/ts_kd_n10_s0")
    shutil.copytree(bundles_dir() / "tskd_student_segmentation", root, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    (root / "models").mkdir()
    shutil.copy(weights, root / "models" / "model.pt")
    config = json.loads(resolved.read_text())
    config["decoder"] = config.get("decoder") or trained_decoder(read_state_dict(weights))
    inference = json.loads((root / "configs" / "inference.json").read_text())
    write_json(root / "configs" / "inference.json", inference | {k: config[k] for k in ("student_name", "decoder") if config.get(k)}, indent=4)
    write_input_size(root / "configs", int(config["image_size"]), int(config["in_channels"]), read_dataset_info(config["dataset_dir"]).classes)
    return config


EXPORTED = ("model.ts", "model.onnx", "export_parity.json")


def export_stage(stage_dir: str | Path, output_dir: str | Path, int8: bool = False, **int8_options: Any) -> dict[str, Any]:
    """``tskd export``: the student of a fine-tune stage as TorchScript and ONNX with their parity against PyTorch
    (:func:`export_with_parity`) and, with ``int8``, as a static int8 ONNX model with its test-split Dice against
    fp32 and the latency of both, calibrated on the stage's training dataset
    (:func:`tskd_components.quantize.quantize_int8` with ``int8_options``: threads, spinning, num_calibration,
    repeats, rounds). The files land in ``output_dir``; returns the report written there as ``export_report.json``."""
    import shutil
    import tempfile

    from .quantize import INT8_FILE, INT8_REPORT, quantize_int8

    out = Path(output_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tskd_student_segmentation"
        config = student_bundle_from_stage(stage_dir, root)
        report: dict[str, Any] = {"stage": str(stage_dir), "student": f"{config.get('student_name') or 'vit_tiny'} + {config['decoder']}",
                                  **export_with_parity(root)}
        if int8:
            report["int8"] = quantize_int8(root, config["dataset_dir"], **int8_options)
        out.mkdir(parents=True, exist_ok=True)
        for name in EXPORTED + ((INT8_FILE, INT8_REPORT) if int8 else ()):
            with atomic_write(out / name) as target:
                shutil.copyfile(root / "models" / name, target)
    write_json(out / "export_report.json", report)
    return report


def package_stage(stage_dir: str | Path, output_dir: str | Path, weights_url: str = "") -> Path:
    """``tskd package``: zip the student of a fine-tune stage of ``tskd experiment`` / ``pipeline`` (a folder with
    ``models/model.pt``, ``run/`` and ``result.json``) as a zoo bundle: the repository's student bundle configs, docs
    and licence, this stage's weights, and the method and teacher its ``result.json`` records."""
    import tempfile

    stage = Path(stage_dir)
    result_file = stage / "result.json"
    if not result_file.is_file() or not (stage / "models" / "model.pt").is_file():
        raise FileNotFoundError(f"{stage} is not a finished fine-tune stage (needs result.json and models/model.pt); pass a folder "
                                "such as <run-dir>/<dataset>/finetune/ts_kd_n10_s0")
    result = json.loads(result_file.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tskd_student_segmentation"
        student_bundle_from_stage(stage, root)
        return package_bundle(root, output_dir, stage / "run", method=result["method"], teacher=result.get("teacher", "none"),
                              weights_url=weights_url)
