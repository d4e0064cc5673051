"""MONAI Label loopback: serve a trained student bundle on 127.0.0.1 and segment a sample image over HTTP.

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
from monai.bundle import download, run
from PIL import Image

from tests.bundles.conftest import BUNDLES, run_bundle
from tests.conftest import REPO, SAMPLE
from tskd_components.deploy import package_bundle

pytest.importorskip("monailabel", reason="MONAI Label is not installed here: it conflicts with the main environment "
                    "(jsonschema < 4 via pydicom-seg); see apps/tskd_monailabel/README.md for the environment this test runs in")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_student_bundle_served_by_monai_label(tmp_path):
    # train a student, package it for the zoo, unpack it as a user would, serve what was unpacked
    trained = tmp_path / "trained" / "tskd_student_segmentation"
    shutil.copytree(BUNDLES / "tskd_student_segmentation", trained, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    run_bundle("tskd_student_segmentation", "train.json", bundle_root=str(trained), dataset_dir=str(SAMPLE), num_labeled=8, max_epochs=2,
               image_size=64, batch_size=4)
    archive = package_bundle(trained, tmp_path / "dist", trained / "runs" / "hc18_n8_s0", method="scratch")
    download(name="tskd_student_segmentation", bundle_dir=str(tmp_path / "zoo"), url=archive.as_uri())
    bundle = tmp_path / "zoo" / "tskd_student_segmentation"
    studies = tmp_path / "studies"
    studies.mkdir()
    image_id = json.loads((SAMPLE / "split.json").read_text())["test"][0]
    source = next((SAMPLE / "images").glob(f"{image_id}.*"))
    shutil.copy(source, studies / source.name)
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    app = shutil.copytree(REPO / "apps" / "tskd_monailabel", tmp_path / "app")  # MONAI Label writes logs into the app folder
    server = subprocess.Popen([sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app),
                               "--studies", str(studies), "--conf", "bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                info = urllib.request.urlopen(f"{base}/info/", timeout=5).read().decode()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        else:
            pytest.fail("MONAI Label did not answer within 120 s:\n" + (tmp_path / "server.log").read_text()[-3000:])
        assert "tskd_student_segmentation" in info and "fetal head" in info
        request = urllib.request.Request(f"{base}/infer/tskd_student_segmentation?image={image_id}&output=image", data=b"", method="POST")
        try:
            body = urllib.request.urlopen(request, timeout=120).read()
        except urllib.error.HTTPError as err:
            pytest.fail(f"inference failed: {err}\n" + (tmp_path / "server.log").read_text()[-4000:])
    finally:
        server.terminate()
        server.wait(30)
    served = np.asarray(Image.open(io.BytesIO(body)))
    # the same bundle run by monai.bundle on the same image gives the same mask
    configs = bundle / "configs"
    run(config_file=str(configs / "inference.json"), meta_file=str(configs / "metadata.json"), bundle_root=str(bundle),
        input_dir=str(studies), output_dir=str(tmp_path / "bundle_out"))
    expected = np.asarray(Image.open(next((tmp_path / "bundle_out" / "masks").glob("*_seg.png"))))
    with Image.open(source) as im:
        assert served.shape == expected.shape == (im.size[1], im.size[0])  # at the source size
    assert set(np.unique(served)) <= {0, 1} and np.array_equal(served, expected)
