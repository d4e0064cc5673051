"""MONAI Label loopback: a packaged student bundle fetched by the app (``--conf models``, ``--conf zoo_url``),
fine-tuned on the datastore's labels and then used for inference, all through the HTTP API on 127.0.0.1.

MONAI Label 0.8.5 does not install beside our main environment (pydicom-seg pins jsonschema < 4 and it brings
numpy 1.26); this test runs in the environment documented in apps/tskd_monailabel/README.md and is skipped,
with that reason, where monailabel is not installed.
"""

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from monai.bundle import run
from PIL import Image

from tests.bundles.conftest import BUNDLES, run_bundle
from tests.conftest import REPO, SAMPLE
from tskd_components.deploy import package_bundle
from tskd_components.utils.weights import file_digest

pytest.importorskip("monailabel", reason="MONAI Label is not installed here: it conflicts with the main environment "
                    "(jsonschema < 4 via pydicom-seg); see apps/tskd_monailabel/README.md for the environment this test runs in")

NAME = "tskd_student_segmentation"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, log, body: bytes = b"", timeout: float = 600) -> bytes:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"}),
                                      timeout=timeout).read()
    except urllib.error.HTTPError as err:
        pytest.fail(f"{url} failed: {err}\n" + log.read_text()[-4000:])


def test_student_bundle_fine_tuned_and_served_by_monai_label(tmp_path, monkeypatch):
    # a trained student, packaged for the zoo with its weights behind large_files.yml
    trained = tmp_path / "trained" / NAME
    shutil.copytree(BUNDLES / NAME, trained, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    run_bundle(NAME, "train.json", bundle_root=str(trained), dataset_dir=str(SAMPLE), num_labeled=8, max_epochs=2, image_size=64, batch_size=4)
    package_bundle(trained, tmp_path / "zoo", trained / "runs" / "hc18_n8_s0", method="scratch", embed_limit_mb=0)
    # studies: six labelled training images (MONAI Label's layout: labels/final/<image name>) and one test image
    split = json.loads((SAMPLE / "split.json").read_text())
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for image_id in split["train"][:6]:
        shutil.copy(next((SAMPLE / "images").glob(f"{image_id}.*")), studies)
        mask = next((SAMPLE / "masks").glob(f"{image_id}.*"))
        shutil.copy(mask, studies / "labels" / "final" / next((SAMPLE / "images").glob(f"{image_id}.*")).name)
    test_id = split["test"][0]
    source = next((SAMPLE / "images").glob(f"{test_id}.*"))
    shutil.copy(source, studies / source.name)

    app = shutil.copytree(REPO / "apps" / "tskd_monailabel", tmp_path / "app", ignore=shutil.ignore_patterns("model", "logs"))
    port, log = free_port(), tmp_path / "server.log"
    server = subprocess.Popen([sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
                               "--conf", "models", NAME, "--conf", "zoo_url", (tmp_path / "zoo").as_uri(), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    bundle = app / "model" / NAME
    try:
        for _ in range(240):
            try:
                info = json.loads(urllib.request.urlopen(f"{base}/info/", timeout=5).read())
                break
            except OSError:
                assert server.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
        else:
            pytest.fail("MONAI Label did not answer within 120 s:\n" + log.read_text()[-3000:])
        assert NAME in info["models"] and NAME in info["trainers"] and "fetal head" in json.dumps(info["models"][NAME])
        fetched = file_digest(bundle / "models" / "model.pt")
        assert fetched == file_digest(trained / "models" / "model.pt")  # through large_files.yml

        request(f"{base}/train/{NAME}?run_sync=true", log, json.dumps({"max_epochs": 2, "device": "cpu", "val_split": 0.34}).encode())
        assert file_digest(bundle / "models" / "model.pt") != fetched, "training did not replace the served model"
        assert (bundle / "runs" / "monailabel" / "training_log.csv").is_file()

        body = request(f"{base}/infer/{NAME}?image={test_id}&output=image", log, timeout=120)
    finally:
        server.terminate()
        server.wait(30)
    served = np.asarray(Image.open(io.BytesIO(body)))
    # the fine-tuned bundle run by monai.bundle on the same image gives the same mask
    monkeypatch.syspath_prepend(str(bundle))  # its scripts/, as MONAI Label imports them
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(source, only / source.name)
    run(config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
        input_dir=str(only), output_dir=str(tmp_path / "bundle_out"))
    expected = np.asarray(Image.open(next((tmp_path / "bundle_out" / "masks").glob("*_seg.png"))))
    with Image.open(source) as im:
        assert served.shape == expected.shape == (im.size[1], im.size[0])  # at the source size
    assert set(np.unique(served)) <= {0, 1} and np.array_equal(served, expected)
