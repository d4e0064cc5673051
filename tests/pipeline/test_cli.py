"""The `tskd` command's handling of bad input: one clear line, the traceback in a log file."""

import pytest

from tskd_components.data import DatasetError
from tskd_components.pipeline import cli, stages


def test_a_data_error_inside_a_bundle_is_one_line_with_the_traceback_in_a_log(sample_dataset, tmp_path, monkeypatch, capsys):
    def failing_bundle(name, configs, **overrides):
        try:
            raise DatasetError("mask /data/masks/7.png: values [3] are not classes of dataset.json; fix the mask")
        except DatasetError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: $@train#trainer.run()") from err

    monkeypatch.setattr(stages, "run_bundle", failing_bundle)
    run_dir = tmp_path / "run"
    code = cli.main(["pipeline", "--dataset-dir", str(sample_dataset), "--scale", "tiny", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tskd: error: mask /data/masks/7.png: values [3]") and "Failed to evaluate" not in err
    assert "Failed to evaluate" in (run_dir / cli.ERROR_LOG).read_text()  # the whole chain is kept


def test_a_bug_keeps_its_traceback(sample_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "run_bundle", lambda name, configs, **o: [][1])
    with pytest.raises(IndexError):
        cli.main(["pipeline", "--dataset-dir", str(sample_dataset), "--scale", "tiny", "--run-dir", str(tmp_path / "run")])


def test_experiment_options_reach_the_spec(sample_dataset, tmp_path):
    args = cli.build_parser().parse_args(["experiment", "--datasets", str(sample_dataset), "--run-dir", str(tmp_path), "--scale", "tiny",
                                          "--image-size", "96", "--decoder", "unetr"])
    options = cli._spec_options(args)
    assert options["image_size"] == 96 and options["decoder"] == "unetr" and options["student_name"] == ""
    assert cli._spec_options(cli.build_parser().parse_args(["experiment", "--datasets", "x"]))["image_size"] is None  # the scale's
