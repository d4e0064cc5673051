"""``tskd``: the TSKD pipeline and experiments from the command line.

    tskd pipeline                       # the whole TS-KD pipeline on the HC18 sample in this repository (CPU, minutes)
    tskd experiment --datasets hc18 ph2 --num-labeled 10 40 --seeds 0 1 2 --run-dir runs/exp
    tskd study lora-rank --datasets hc18 --values 1 4 16 64 --num-labeled 10 --run-dir runs/rank
    tskd report --run-dir runs/exp      # rebuild CSV, tables and figures from the finished cells
    tskd foundation --targets hc18 ph2 acdc   # pre-train the SAM stand-in on every other dataset (CPU, ~40 min)

Each stage is a bundle of bundles/ run through monai.bundle; re-running a command skips finished stages whose inputs
did not change and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import traceback
from pathlib import Path

import torch

from ..data.dataset import DatasetError, read_split, sample_dataset_dir
from .experiment import METHODS, PAPER_METHODS, Experiment, ExperimentSpec
from .scales import SCALES
from .synthesis_recipe import ARMS, PRESET_STEPS
from .report import read_csv, write_report
from .tables import paired_markdown
from .console import set_verbose
from .stages import Stage

STUDIES = {"transfer-size": "transfer_size", "lora-rank": "lora_rank", "synthetic": "transfer_size"}


def resolve_dataset(name: str, data_root: str) -> Path:
    """A dataset folder given by path, or by name under ``data_root``."""
    path = Path(name)
    if not path.is_dir():
        path = Path(data_root) / name
    if not (path / "dataset.json").is_file():
        raise FileNotFoundError(f"dataset {name!r} not found (looked for {path}/dataset.json); pass a dataset folder or a name "
                                f"under --data-root {data_root}")
    return path.resolve()


def _common_args(parser: argparse.ArgumentParser, run_dir: str) -> None:
    parser.add_argument("--run-dir", default=run_dir, help="folder of every stage's outputs (re-use it to resume)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small",
                        help="small: CPU, SAM-architecture teacher from random init (an ablation); standin: CPU, the foundation "
                        "stand-in of `tskd foundation` (--sam-checkpoint); paper: GPU, official SAM vit_b (--sam-checkpoint)")
    parser.add_argument("--sam-checkpoint", default="", help="SAM checkpoint: official vit_b (paper scale) or the stand-in (standin scale)")
    parser.add_argument("--teacher-labels", choices=("budget", "all"), default="budget",
                        help="teacher fine-tuned on the student's labels (paper setting) or on the whole train split")
    parser.add_argument("--synthesis-dir", default="", help="a `tskd synthesis` run folder: synthetic images come from its "
                        "<dataset>/<--synthesis-arm> model instead of one trained at the scale's settings")
    parser.add_argument("--synthesis-arm", default="pool_then_target", help="which recipe of --synthesis-dir (default: pool_then_target)")
    parser.add_argument("--synthesis-samples", default="", help="a folder of samples drawn once (bundles/tskd_synthesis/configs/"
                        "sample.json, e.g. on a GPU): the transfer sets take its first samples instead of sampling a model here")
    parser.add_argument("--match-samples", action="store_true", help="synthetic images take the channel means / stds of one real "
                        "training image each (the recipe's `<arm>, matched samples` rows)")
    parser.add_argument("--student", default="", help="registered student for the ViT student stages (default: the bundles', vit_tiny)")
    parser.add_argument("--decoder", default="", help="decoder of the student (default: the bundles', light); name a --variant with it")
    parser.add_argument("--image-size", type=int, default=0, help="student and teacher input size (0: the scale's); use a --run-dir of its own")
    parser.add_argument("--distill-steps", type=int, default=0, help="distillation steps whatever the transfer set's size (0: the scale's "
                        "epochs, so a larger set gets more steps); fixes the compute of a transfer-size study")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes of every stage (GPU runs; 0: none)")
    parser.add_argument("--verbose", action="store_true", help="stream every stage's output here (default: into <stage>/stage.log)")


def _pool_args(parser: argparse.ArgumentParser, targets_help: str) -> None:
    """The disjoint pool of other datasets (the foundation stand-in's and the synthesis recipe's), and run options."""
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--targets", nargs="+", default=["hc18", "ph2", "acdc"], help=targets_help)
    parser.add_argument("--pool", nargs="*", default=[], help="pool datasets (default: every dataset under --data-root but the targets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--verbose", action="store_true", help="stream each stage's output here (default: into its stage.log)")


def _spec_options(args: argparse.Namespace) -> dict:
    """The ExperimentSpec settings that :func:`_common_args` defines."""
    return dict(run_dir=Path(args.run_dir), scale=args.scale, teacher_labels=args.teacher_labels, sam_checkpoint=args.sam_checkpoint,
                synthesis_dir=args.synthesis_dir, synthesis_arm=args.synthesis_arm, synthesis_samples=args.synthesis_samples, match_samples=args.match_samples, student_name=args.student, decoder=args.decoder,
                num_workers=args.num_workers, image_size=args.image_size or None, distill_steps=args.distill_steps)


ERROR_LOG = "tskd_error.log"
INPUT_ERRORS = (DatasetError, FileNotFoundError, ValueError, FloatingPointError)  # a stale cache is a ValueError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tskd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    pipe = sub.add_parser("pipeline", help="synthesis -> teacher -> cache -> TS-KD -> student fine-tune -> evaluation, vs scratch")
    _common_args(pipe, "runs/pipeline")
    pipe.add_argument("--dataset-dir", default=str(sample_dataset_dir()), help="default: the HC18 sample shipped in the repository")
    pipe.add_argument("--num-labeled", type=int, default=20)
    pipe.add_argument("--synthetic", type=int, default=16, help="synthetic images added to the transfer set (0: none)")
    pipe.add_argument("--seed", type=int, default=0)

    exp = sub.add_parser("experiment", help="methods x datasets x label budgets x seeds, with report")
    _common_args(exp, "runs/experiment")
    exp.add_argument("--datasets", nargs="+", required=True, help="dataset folders or names under --data-root")
    exp.add_argument("--data-root", default="../shared/data")
    exp.add_argument("--num-labeled", type=int, nargs="+", default=[10, 20, 40, 80, 100])
    exp.add_argument("--methods", nargs="+", choices=METHODS, default=list(PAPER_METHODS) + ["unet_scratch"])
    exp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    exp.add_argument("--transfer-size", type=int, default=0, help="transfer-set size; above the train split, synthetic images fill it")
    exp.add_argument("--variant", default="", help="name of a variation of the settings; its results live apart (<dataset>_<variant>)")
    exp.add_argument("--mae-imagenet-weights", default="", help="ImageNet MAE ViT-Tiny weights for mae_imagenet (and to start mae from)")

    study = sub.add_parser("study", help="TS-KD under one varied setting: transfer-size, lora-rank or synthetic (with vs without)")
    _common_args(study, "runs/study")
    study.add_argument("name", choices=sorted(STUDIES))
    study.add_argument("--values", type=int, nargs="+", required=True,
                       help="transfer-set sizes, LoRA ranks, or (synthetic) the transfer-set size with synthetic images")
    study.add_argument("--datasets", nargs="+", required=True)
    study.add_argument("--data-root", default="../shared/data")
    study.add_argument("--num-labeled", type=int, nargs="+", default=[10])
    study.add_argument("--seeds", type=int, nargs="+", default=[0])

    found = sub.add_parser("foundation", help="pre-train the foundation stand-in (promptable SAM) on datasets disjoint from the targets")
    found.add_argument("--run-dir", default="runs/foundation", help="its stage folder (re-use it to resume)")
    _pool_args(found, "datasets the stand-in must never see")
    found.add_argument("--max-steps", type=int, default=2400, help="optimizer steps (rounded up to whole epochs)")
    found.add_argument("--image-size", type=int, default=128)

    syn = sub.add_parser("synthesis", help="diffusion recipes for one target side by side: today's, longer, pool pre-training + target, colour-matched pool")
    syn.add_argument("--dataset", required=True, help="the target: a dataset name under --data-root, or a folder")
    _pool_args(syn, "datasets never in the pool (the target is added)")
    syn.add_argument("--run-dir", default="runs/synthesis")
    syn.add_argument("--preset", default="cpu", choices=list(PRESET_STEPS), help="cpu: 64 px, ~60 min on 2 cores; gpu: 128 px, the "
                     "bundle's gpu.json network (the four settings below default to the preset's)")
    syn.add_argument("--pool-steps", type=int, help="optimizer steps on the pool (cpu: 1400, with --target-steps ~60 min on 2 cores)")
    syn.add_argument("--target-steps", type=int, help="optimizer steps on the target after the pool (cpu: 800)")
    syn.add_argument("--today-epochs", type=int, default=25, help="epochs of today's target-only recipe")
    syn.add_argument("--image-size", type=int)
    syn.add_argument("--batch-size", type=int)
    syn.add_argument("--standin-checkpoint", default="", help="foundation stand-in whose encoder features the report also uses")
    syn.add_argument("--samples", type=int, default=64, help="synthetic images each report draws")
    syn.add_argument("--ddim-steps", type=int, default=50)
    syn.add_argument("--ddim-eta", type=float, help="DDIM step noise of the reports' samples (0: deterministic, 1: ancestral; default: the bundle's)")
    syn.add_argument("--prediction-type", choices=["epsilon", "v_prediction", "sample"], help="what the UNet learns to predict "
                     "(default: the bundle's, v_prediction; epsilon before bundle 0.5.0)")
    syn.add_argument("--snr-gamma", type=float, help="Min-SNR-gamma loss weights (default: the bundle's, 5; 0 = plain MSE)")
    syn.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS,
                     help="arms this process runs (e.g. two processes of one thread: --arms today target_long / --arms pool_then_target)")
    syn.add_argument("--no-matched-report", action="store_true", help="skip each arm's report of its samples matched to the "
                     "target's channel statistics")

    pack = sub.add_parser("package", help="zip a fine-tuned student as a self-contained model-zoo bundle")
    pack.add_argument("stage_dir", help="a fine-tune stage folder, e.g. runs/exp/hc18/finetune/ts_kd_n10_s0")
    pack.add_argument("output_dir", help="where the zip is written")
    pack.add_argument("--weights-url", default="", help="where model.pt will be hosted (large_files.yml's URL; default: the "
                      "file:// path of the copy written beside the zip)")

    exp_ = sub.add_parser("export", help="TorchScript + ONNX of a fine-tuned student with output parity; --int8: static int8 ONNX "
                          "with its test Dice and latency against fp32")
    exp_.add_argument("stage_dir", help="a fine-tune stage folder, e.g. runs/exp/hc18/finetune/ts_kd_n10_s0")
    exp_.add_argument("output_dir", help="where model.ts, model.onnx (and model_int8.onnx) and their reports are written")
    exp_.add_argument("--int8", action="store_true", help="also quantize to int8 (calibrated on the stage's training images)")
    exp_.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads of the latency check (0: one per physical core)")
    exp_.add_argument("--no-spinning", action="store_true", help="idle ONNX Runtime worker threads sleep instead of spin-waiting "
                      "(steadier on small VMs)")

    rep = sub.add_parser("report", help="rebuild results.csv, report.md and the figures of a run folder")
    rep.add_argument("--run-dir", help="run folder: rebuild everything from its result cells")
    rep.add_argument("--paired-from-csv", help="only print the paired-difference tables (95%% CIs) of a results.csv")
    rep.add_argument("--earlier-results", help="a results.csv whose cells the run folder lacks are added (e.g. the committed one "
                     "of an experiment whose run folder is gone); one foundation model per dataset, budget and seed")
    return parser


def study_specs(args: argparse.Namespace, datasets: list[Path]) -> list[ExperimentSpec]:
    common = dict(**_spec_options(args), datasets=datasets, num_labeled=args.num_labeled, methods=["ts_kd"], seeds=args.seeds)
    if args.name == "lora-rank":
        return [ExperimentSpec(**common, lora_rank=r, variant=f"lora_rank_{r:02d}") for r in args.values]
    if args.name == "transfer-size":
        return [ExperimentSpec(**common, transfer_size=n, variant=f"transfer_{n:05d}") for n in args.values]
    return [ExperimentSpec(**common, transfer_size=0, variant="real_only")] + [
        ExperimentSpec(**common, transfer_size=n, variant=f"synthetic_{'matched_' if args.match_samples else ''}{n:05d}") for n in args.values]


def run_foundation(args: argparse.Namespace) -> Path:
    """The stand-in pre-training as a resumable stage; returns its checkpoint (official SAM keys)."""
    from ..foundation import CHECKPOINT_FILE, resolve_pool, resolve_targets

    targets, pool = resolve_targets(args.data_root, args.targets), resolve_pool(args.data_root, args.targets, args.pool)
    folder = Path(args.run_dir).resolve()
    output = folder / "standin"
    overrides = {"data_root": str(Path(args.data_root).resolve()), "targets": [t.name for t in targets], "pool": [p.name for p in pool],
                 "max_steps": args.max_steps, "image_size": args.image_size, "seed": args.seed, "output_dir": str(output)}
    Stage("foundation", f"foundation stand-in (pool: {', '.join(p.name for p in pool)})", folder, "foundation", overrides,
          inputs=[*pool, *targets], outputs=[output / CHECKPOINT_FILE, output / "promptable_dice.json"]).run()
    return output / CHECKPOINT_FILE


def main(argv: list[str] | None = None) -> int:
    """``tskd``: a bad input (a dataset file, a checkpoint, a setting) ends with one line naming it and the fix (exit 2),
    its full traceback in ``tskd_error.log`` in the run (or output) folder; any other failure keeps its traceback."""
    args = build_parser().parse_args(argv)
    command = "tskd " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        return run_command(args, command)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is an input error
        cause = input_error(err)
        if cause is None:
            raise
        log = Path(getattr(args, "run_dir", None) or getattr(args, "output_dir", None) or tempfile.gettempdir()) / ERROR_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(err)))
        print(f"tskd: error: {cause}\n(full traceback: {log})", file=sys.stderr)
        return 2


def input_error(err: BaseException) -> BaseException | None:
    """The innermost exception of ``err``'s chain (MONAI wraps a config expression's error in ``RuntimeError:
    Failed to evaluate``) when it is one of the clear input errors our code raises, else ``None``."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    return err if isinstance(err, INPUT_ERRORS) else None


def run_command(args: argparse.Namespace, command: str) -> int:
    if getattr(args, "verbose", False):
        set_verbose(True)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    if args.command == "report":
        if args.paired_from_csv:
            print(paired_markdown(read_csv(args.paired_from_csv)))
        else:
            write_report(args.run_dir, command, args.earlier_results)
        return 0
    if args.command == "package":
        from ..deploy import package_stage

        archive = package_stage(args.stage_dir, args.output_dir, args.weights_url)
        print(f"bundle: {archive}\nweights: {archive.with_name(archive.stem + '_model.pt')} (large_files.yml points to "
              f"{args.weights_url or 'this file'}; host it and pass --weights-url to share the bundle)")
        return 0
    if args.command == "export":
        from ..deploy import export_stage

        report = export_stage(args.stage_dir, args.output_dir, int8=args.int8, threads=args.threads, spinning=not args.no_spinning)
        print(f"TorchScript / ONNX max |difference| to PyTorch: {report['torchscript_max_abs_diff']:.2e} / {report['onnx_max_abs_diff']:.2e}")
        if args.int8:
            q = report["int8"]
            print(f"int8: test Dice {q['dice_int8']:.4f} (fp32 {q['dice_fp32']:.4f}), {q['latency_ms_int8']:.1f} ms against "
                  f"{q['latency_ms_fp32']:.1f} ms -> x{q['speedup']:.2f}, {q['size_mb_int8']:.1f} MB against {q['size_mb_fp32']:.1f} MB")
        print(f"files: {Path(args.output_dir) / 'export_report.json'} and the models beside it")
        return 0
    if args.command == "synthesis":
        from ..foundation import resolve_pool
        from .synthesis_recipe import SynthesisRecipe

        target = resolve_dataset(args.dataset, args.data_root)
        recipe = SynthesisRecipe(run_dir=Path(args.run_dir), target=target, pool=resolve_pool(args.data_root, [*args.targets, target.name], args.pool),
                                 today_epochs=args.today_epochs, standin_checkpoint=args.standin_checkpoint, report_samples=args.samples,
                                 ddim_steps=args.ddim_steps, ddim_eta=args.ddim_eta, seed=args.seed, arms=args.arms, preset=args.preset, pool_steps=args.pool_steps,
                                 target_steps=args.target_steps, image_size=args.image_size, batch_size=args.batch_size,
                                 match_samples=not args.no_matched_report, overrides={k: v for k, v in (
                                     ("prediction_type", args.prediction_type), ("snr_gamma", args.snr_gamma)) if v is not None})
        print(f"recipes: {recipe.run()}")
        return 0
    if args.command == "foundation":
        print(f"stand-in: {run_foundation(args)}")
        return 0
    if args.command == "pipeline":
        dataset = Path(args.dataset_dir).resolve()
        num_real = len(read_split(dataset)["train"])
        specs = [ExperimentSpec(**_spec_options(args), datasets=[dataset], num_labeled=[args.num_labeled], methods=["scratch", "ts_kd"],
                                seeds=[args.seed], transfer_size=num_real + args.synthetic if args.synthetic else 0)]
    else:
        datasets = [resolve_dataset(d, args.data_root) for d in args.datasets]
        if args.command == "experiment":
            specs = [ExperimentSpec(**_spec_options(args), datasets=datasets, num_labeled=args.num_labeled, methods=args.methods,
                                    seeds=args.seeds, transfer_size=args.transfer_size, mae_imagenet_weights=args.mae_imagenet_weights,
                                    variant=args.variant)]
        else:
            specs = study_specs(args, datasets)
    for spec in specs:
        Experiment(spec).run()
    write_report(args.run_dir, command)
    return 0
