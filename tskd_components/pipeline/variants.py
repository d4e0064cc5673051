"""Variants of the settings against a reference variant, paired by seed: the transfer-size study (each number of
synthetic images against real images only), student variants (a decoder or backbone against the default), ranks."""

from __future__ import annotations

from typing import Any, Sequence

from .statistics import DIRECTION, NOT_MATCHED, paired_differences, unmatched_verdict, verdict

REFERENCE_VARIANTS = ("", "real_only")  # the plain run, else the study's real-images-only arm


def reference_variant(variants: Sequence[str]) -> str | None:
    """The variant the others are compared with: the first of :data:`REFERENCE_VARIANTS` present, else the first in
    sorted order; ``None`` when there is only one variant."""
    present = sorted(set(variants))
    if len(present) < 2:
        return None
    return next((v for v in REFERENCE_VARIANTS if v in present), present[0])


UNET = "unet_scratch"


def _flipped(d: dict[str, Any], metric: str) -> dict[str, Any]:
    """A ``reference − other`` row of :func:`paired_differences` as ``other − reference``, with the other's verdict."""
    low, high = -d["ci_high"], -d["ci_low"]
    return {**d, "mean_diff": -d["mean_diff"], "ci_low": low, "ci_high": high,
            "verdict": verdict(low, high, DIRECTION.get(metric, 1)) if d["pairs"] else d["verdict"]}


def variant_differences(rows: Sequence[dict[str, Any]], metric: str = "dice") -> list[dict[str, Any]]:
    """Per dataset, method and budget: each variant minus the reference variant, paired by seed (mean, 95% CI,
    verdict for the variant: "better" where the CI excludes 0 in the metric's good direction)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    reference = reference_variant([r.get("variant", "") for r in ok])
    if reference is None:
        return []
    return [_flipped(d, metric) for d in paired_differences(ok, reference, metric, group_keys=("dataset", "method", "num_labeled"), by="variant")]


def unet_gaps(rows: Sequence[dict[str, Any]], metric: str = "dice") -> list[dict[str, Any]]:
    """Per dataset and budget: every variant's methods minus the UNet reference of the reference variant, paired by
    seed (``arm`` = "<variant> <method>"): the gap a smaller, faster student has to close. Empty without variants or
    without UNet cells."""
    ok = [r for r in rows if r.get("status") == "ok"]
    reference = reference_variant([r.get("variant", "") for r in ok])
    if reference is None:
        return []
    arms = [{**r, "arm": "unet" if r["method"] == UNET else f"{r.get('variant') or 'default'} {r['method']}"}
            for r in ok if r["method"] != UNET or r.get("variant", "") == reference]
    return [_flipped(d, metric) for d in paired_differences(arms, "unet", metric, group_keys=("dataset", "num_labeled"), by="arm")]


def format_ci(d: dict[str, Any]) -> str:
    """A paired difference's 95% CI as text ("[n/a]" from a single pair)."""
    return f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d["pairs"] > 1 else "[n/a]"


def variants_markdown(rows: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, str]] = (("dice", "Dice"), ("hd95", "HD95 (px)"),
                                                                                           ("nsd", "NSD"))) -> str:
    """One table per metric: variant − reference variant, paired by seed; then, where the reference variant has UNet
    cells, every variant's students − that UNet (Dice). Empty with a single variant."""
    lines = []
    for key, title in metrics:
        diffs = variant_differences(rows, key)
        if not diffs:
            continue
        name = diffs[0]["reference"] or "default"
        lines += [f"### Variant − {name}: {title}, paired by seed", "",
                  "| dataset | method | labels | variant | pairs | mean difference [95% CI] | verdict |", "|---|---|---|---|---|---|---|"]
        for d in diffs:
            lines.append(f"| {d['dataset']} | {d['method']} | {d['num_labeled']} | {d['variant'] or 'default'} | {d['pairs']} | "
                         f"{d['mean_diff']:+.3f} {format_ci(d)} | {d['verdict']} |")
        lines.append("")
    gaps = unet_gaps(rows)
    if gaps:
        lines += ["### Student − UNet reference: Dice, paired by seed", "", "| dataset | labels | variant and method | pairs | "
                  "mean difference [95% CI] | verdict |", "|---|---|---|---|---|---|"]
        lines += [f"| {d['dataset']} | {d['num_labeled']} | {d['arm']} | {d['pairs']} | {d['mean_diff']:+.3f} {format_ci(d)} | "
                  f"{unmatched_verdict(d['verdict'], 'UNet: ' + NOT_MATCHED[UNET])} |" for d in gaps] + [""]
    return "\n".join(lines)
