"""Two synthesis models (or samplers) compared over sampling seeds: the paired difference of a report metric.

    python benchmarks/paired_seeds.py --metric standin_two_sample_accuracy \\
        --a runs/synthesis_vminsnr/hc18/target_long/matched_samples/quality/quality.json \\
            runs/sampler_sweep/hc18_vminsnr/ddim50_eta0_seed{1,2,3,4}/quality.json \\
        --b docs/results/synthesis/hc18_target_2205steps_matched140cv_quality.json \\
            runs/sampler_sweep/hc18_2205/ddim50_eta0_seed{1,3,4}/quality.json runs/sampler_sweep/hc18_2205_50:0/ddim50_eta0_seed2/quality.json

``--a`` and ``--b`` are ``quality.json`` reports (the bundle's report config or ``benchmarks/sampler_sweep.py``) in
the same order of sampling seeds, so that the i-th of each share a seed (its initial noise, step noise and matching
draw). Prints each pair and the mean of a - b with its 95% t interval over the pairs (Student t, as the experiments'
paired seed differences); ``--out`` also writes them as JSON. A sampling seed redraws the samples of one trained
model each; the training itself is one run per model, so the interval covers sampling, not training, variation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tskd_components.pipeline.statistics import mean_ci
from tskd_components.utils.io import write_json


def metric_of(report: dict, name: str) -> float:
    """``standin_<key>`` reads the stand-in block of a report (e.g. ``standin_two_sample_accuracy``), other names the top."""
    block, key = (report["standin"], name.removeprefix("standin_")) if name.startswith("standin_") else (report, name)
    if key not in block:
        raise KeyError(f"the report has no {name!r}; choose e.g. standin_two_sample_accuracy, standin_fid, standin_recall, fid")
    return float(block[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", required=True, help="reports of model / sampler A, one per sampling seed")
    parser.add_argument("--b", nargs="+", required=True, help="reports of B, in the same seed order")
    parser.add_argument("--metric", default="standin_two_sample_accuracy")
    parser.add_argument("--out", help="write the pairs and the interval as JSON here")
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        parser.error(f"--a has {len(args.a)} reports and --b {len(args.b)}: give one of each per sampling seed")
    pairs = [(metric_of(json.loads(Path(a).read_text()), args.metric), metric_of(json.loads(Path(b).read_text()), args.metric))
             for a, b in zip(args.a, args.b)]
    for i, (a, b) in enumerate(pairs):
        print(f"pair {i}: a {a:.4f}  b {b:.4f}  a - b {a - b:+.4f}")
    means = [mean_ci([p[k] for p in pairs]) for k in (0, 1)]
    diff = mean_ci([a - b for a, b in pairs])
    print(f"{args.metric}: a {means[0][0]:.4f}, b {means[1][0]:.4f}; a - b {diff[0]:+.4f} [{diff[1]:+.4f}, {diff[2]:+.4f}] "
          f"(95% t interval, {len(pairs)} pairs)")
    if args.out:
        write_json(args.out, {"metric": args.metric, "a": args.a, "b": args.b, "pairs": pairs, "mean_a": means[0][0], "mean_b": means[1][0],
                              "difference": diff[0], "ci95": [diff[1], diff[2]]})


if __name__ == "__main__":
    main()
