"""Variants of the settings against a reference variant, paired by seed."""

import pytest

from tskd_components.pipeline.variants import reference_variant, unet_gaps, variant_differences, variants_markdown


def rows(shift, hd_shift=0.0, reference="", other="light"):
    out = []
    for seed, base in enumerate((0.70, 0.74, 0.80)):
        for variant, delta, hd in ((reference, 0.0, 0.0), (other, shift(seed), hd_shift)):
            out.append({"dataset": "hc18", "variant": variant, "method": "ts_kd", "num_labeled": 20, "seed": seed, "status": "ok",
                        "dice": base + delta, "hd95": 20.0 + seed + hd, "nsd": 0.5})
    return out


def test_reference_is_the_plain_run_then_real_only_then_the_first():
    assert reference_variant(["light", "", "tinyvit"]) == ""
    assert reference_variant(["synthetic_00280", "real_only"]) == "real_only"
    assert reference_variant(["lora_rank_08", "lora_rank_04"]) == "lora_rank_04"
    assert reference_variant(["light", "light"]) is None


def test_variant_minus_reference_with_its_ci_and_verdict():
    dice = variant_differences(rows(lambda s: 0.05, hd_shift=-3.0))
    assert len(dice) == 1 and dice[0]["variant"] == "light" and dice[0]["pairs"] == 3
    assert dice[0]["mean_diff"] == pytest.approx(0.05) and dice[0]["verdict"] == "better"
    hd = variant_differences(rows(lambda s: 0.05, hd_shift=-3.0), "hd95")[0]
    assert hd["mean_diff"] == pytest.approx(-3.0) and hd["verdict"] == "better"  # lower HD95 is better
    worse = variant_differences(rows(lambda s: -0.02 - 0.01 * s))[0]
    assert worse["mean_diff"] == pytest.approx(-0.03) and worse["ci_high"] < 0 and worse["verdict"] == "worse"
    mixed = variant_differences(rows(lambda s: (0.05, -0.06, 0.02)[s]))[0]
    assert mixed["ci_low"] < 0 < mixed["ci_high"] and mixed["verdict"] == "no difference shown"


def test_markdown_names_the_reference_and_is_empty_for_one_variant():
    text = variants_markdown(rows(lambda s: 0.05, reference="real_only", other="synthetic_00280"))
    assert "### Variant − real_only: Dice, paired by seed" in text
    assert "| hc18 | ts_kd | 20 | synthetic_00280 | 3 | +0.050 [+0.050, +0.050] | better |" in text
    assert variants_markdown([r for r in rows(lambda s: 0.05) if r["variant"] == ""]) == ""


def test_every_variant_against_the_plain_runs_unet():
    data = rows(lambda s: 0.05)
    data += [{"dataset": "hc18", "variant": "", "method": "unet_scratch", "num_labeled": 20, "seed": s, "status": "ok", "dice": d}
             for s, d in enumerate((0.80, 0.80, 0.84))]
    data += [{**data[-1], "variant": "light"}]  # a variant's own UNet cell is not the reference
    gaps = {d["arm"]: d for d in unet_gaps(data)}
    assert sorted(gaps) == ["default ts_kd", "light ts_kd"]
    assert gaps["default ts_kd"]["mean_diff"] == pytest.approx((-0.10 - 0.06 - 0.04) / 3) and gaps["default ts_kd"]["verdict"] == "no difference shown"
    assert gaps["light ts_kd"]["mean_diff"] == pytest.approx((-0.05 - 0.01 + 0.01) / 3) and gaps["light ts_kd"]["pairs"] == 3
    assert "| hc18 | 20 | light ts_kd | 3 | -0.017 [" in variants_markdown(data)
    behind = [{**r, "dice": r["dice"] - 0.2} if r["method"] == "ts_kd" else r for r in data]  # CI excludes 0, compute unmatched
    assert "| hc18 | 20 | default ts_kd | 3 | -0.267 [-0.343, -0.191] | CI excludes 0; compute not matched (UNet: another network, its own steps) |" in variants_markdown(behind)
    assert unet_gaps(rows(lambda s: 0.05)) == []  # no UNet cells
