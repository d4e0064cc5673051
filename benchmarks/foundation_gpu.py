"""Pre-train the foundation stand-in on a GPU machine, bring it back, and evaluate it here.

The stand-in recipe is `tskd foundation` (``bundles/tskd_sam_lora/configs/pretrain.json``); on 2 CPU cores its 2400
default steps take ~50 minutes. A GPU machine runs the same bundle for more steps in minutes. Two halves:

``train`` (on the GPU machine, pool datasets' train split carried beside the code)::

    python benchmarks/foundation_gpu.py train --data-root .gpu/data --max-steps 4800 --out $OUT

runs the bundle's trainer and ``save_standin`` (not its report: the targets' images stay here), then writes the state
dict as float16 shards (the device returns files of at most 16 MiB) with the training log and record.

``import`` (here)::

    python benchmarks/foundation_gpu.py import --shards <folder> --run-dir runs/foundation_gpu --data-root ../shared/data

joins the shards into ``standin/standin.pth`` (float32 again; the weights are float16-rounded, which the record says),
rewrites ``standin.json`` with the new file's SHA-256 and writes the box-prompt report (held-out pool, zero-shot
targets) as ``promptable_dice.json``, the same files `tskd foundation` leaves.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch
from ignite.engine import Events

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "bundles" / "tskd_sam_lora" / "configs" / "pretrain.json"
SHARD_BYTES = 15 * 2**20
LOGS = ("training_log.csv", "training_summary.json", "standin.json", "config.resolved.json", "versions.json")


def parse_config(args: argparse.Namespace, output_dir: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update({"bundle_root": str(CONFIG.parents[1]), "data_root": str(Path(args.data_root).resolve()), "targets": args.targets,
                   "pool": args.pool, "max_steps": args.max_steps, "image_size": args.image_size, "seed": args.seed,
                   "num_workers": args.num_workers, "output_dir": str(output_dir)})
    return parser


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    output_dir = Path(args.work) / "standin"
    parser = parse_config(args, output_dir)
    parser["run"] = parser["run"][:2]  # trainer + save_standin; the report needs the targets' images
    start = time.time()
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")

    @trainer.on(Events.ITERATION_COMPLETED)
    def time_limit(engine) -> None:  # a guard for a lease that ends: the record says where it stopped
        if time.time() - start > args.max_seconds:
            engine.terminate()

    parser.get_parsed_content("run")
    seconds = time.time() - start
    state = {k: v.half() if v.is_floating_point() else v for k, v in torch.load(output_dir / "standin.pth").items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    blob = buffer.getvalue()
    for i in range(0, len(blob), SHARD_BYTES):
        (out / f"standin_fp16.part{i // SHARD_BYTES}").write_bytes(blob[i:i + SHARD_BYTES])
    record = json.loads((output_dir / "standin.json").read_text())
    record.update(steps=trainer.state.iteration, stopped_early=trainer.state.iteration < args.max_steps, device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", train_seconds=round(seconds, 1))
    (output_dir / "standin.json").write_text(json.dumps(record, indent=1))
    logs = [output_dir / name for name in LOGS if (output_dir / name).is_file()]
    _tar(logs, out / "standin_logs.tar.gz")
    print(f"stand-in: {record['steps']} steps in {seconds:.0f} s on {record['device']}; {len(blob) / 2**20:.1f} MiB of float16 shards")


def _tar(paths: list[Path], target: Path) -> None:
    import tarfile

    with tarfile.open(target, "w:gz") as tar:
        for path in paths:
            tar.add(path, arcname=path.name)


def import_standin(args: argparse.Namespace) -> None:
    import tarfile

    from tskd_components.data import preprocessing, read_dataset_info
    from tskd_components.foundation import build_promptable_sam, resolve_pool, resolve_targets
    from tskd_components.foundation.evaluate import standin_report
    from tskd_components.utils.io import write_json
    from tskd_components.utils.weights import file_digest

    shards = Path(args.shards)
    folder = Path(args.run_dir) / "standin"
    folder.mkdir(parents=True, exist_ok=True)
    parts = sorted(shards.glob("standin_fp16.part*"), key=lambda p: int(p.suffix[len(".part"):]))
    state = torch.load(io.BytesIO(b"".join(p.read_bytes() for p in parts)))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    with tarfile.open(shards / "standin_logs.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    record = json.loads((folder / "standin.json").read_text())
    sam = build_promptable_sam(record["sam_variant"], record["image_size"])
    sam.load_state_dict(state)  # strict: the shards hold every key of the official layout
    torch.save(sam.state_dict(), folder / "standin.pth")
    record.update(sha256=file_digest(folder / "standin.pth"), weights="float16-rounded on the GPU machine, float32 here")
    write_json(folder / "standin.json", record)
    targets = resolve_targets(args.data_root, record["targets"])
    pool = resolve_pool(args.data_root, record["targets"], record["pool"])
    num_classes = max(read_dataset_info(d).num_classes for d in [*pool, *targets])
    report = standin_report(sam, pool, targets, preprocessing(image_size=record["image_size"], num_classes=num_classes, channels=3),
                            folder / "promptable_dice.json")
    print(json.dumps({k: {d: round(v["dice"], 3) for d, v in r["per_dataset"].items()} for k, r in report.items() if k != "prompt"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--data-root", required=True)
    tr.add_argument("--targets", nargs="+", default=["hc18", "ph2", "acdc"])
    tr.add_argument("--pool", nargs="*", default=[])
    tr.add_argument("--max-steps", type=int, default=4800)
    tr.add_argument("--image-size", type=int, default=128)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--num-workers", type=int, default=6)
    tr.add_argument("--max-seconds", type=float, default=float("inf"), help="stop training after this long (the lease's limit)")
    tr.add_argument("--work", default="/tmp/foundation_gpu")
    tr.add_argument("--out", required=True)
    im = sub.add_parser("import")
    im.add_argument("--shards", required=True)
    im.add_argument("--run-dir", default="runs/foundation_gpu")
    im.add_argument("--data-root", default="../shared/data")
    args = parser.parse_args()
    train(args) if args.command == "train" else import_standin(args)


if __name__ == "__main__":
    main()
