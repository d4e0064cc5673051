"""Make a packaged student bundle self-contained, as model-zoo bundles are: the code its configs need for inference,
evaluation and fine-tuning (student networks, decoders, transforms, the handler chain, metrics, the overlay writer)
copied into the bundle's ``scripts/`` package, and the configs' ``tskd_components.*`` references rewritten to
``scripts.*``. Like every zoo bundle with a ``scripts/`` folder, it runs from its own root (``cd <bundle>; python
-m monai.bundle run --config_file configs/inference.json``: ``import scripts`` is resolved while the config is
parsed, before MONAI puts the bundle root on ``sys.path``), and needs only MONAI, torch and timm (and their usual
readers; pytorch-ignite to train) there."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# the modules the student configs need (inference, evaluate, train, multi-GPU train), copied flat into scripts/ (their
# relative imports are rewritten to match; write_scripts refuses a module whose imports are not copied too)
SCRIPT_MODULES = ("networks/student.py", "networks/hierarchical.py", "networks/decoders.py", "networks/layers.py",
                  "networks/student_weights.py", "data/transforms.py", "data/dataset.py", "engines/training.py",
                  "engines/handlers.py", "engines/checkpoint.py", "engines/metrics.py", "utils/io.py", "utils/weights.py",
                  "utils/run_record.py", "visualize.py")
_RELATIVE_IMPORT = re.compile(r"^(\s*)from \.+(?:[\w.]+\.)?(\w+) import", re.MULTILINE)
_REFERENCE = re.compile(r"tskd_components((?:\.\w+)+)")


def write_scripts(bundle_dir: str | Path, origin: str = "") -> Path:
    """Copy :data:`SCRIPT_MODULES` into ``<bundle_dir>/scripts/`` as one flat package; returns that folder."""
    scripts = Path(bundle_dir) / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    names = {Path(m).stem for m in SCRIPT_MODULES}
    for module in SCRIPT_MODULES:
        source = (PACKAGE / module).read_text()
        flat = _RELATIVE_IMPORT.sub(lambda m: f"{m.group(1)}from .{m.group(2)} import", source)
        missing = {m.group(2) for m in _RELATIVE_IMPORT.finditer(source)} - names
        if missing:
            raise RuntimeError(f"{module} imports {sorted(missing)}, which SCRIPT_MODULES does not copy; add them")
        (scripts / Path(module).name).write_text(flat)
    (scripts / "__init__.py").write_text(f'"""Code of the TSKD student copied from tskd_components{" " + origin if origin else ""} by `tskd package`."""\n\n'
                                         f"from . import {', '.join(sorted(names))}  # noqa: F401 (configs call scripts.<module>.<name>)\n")
    return scripts


def self_contained(config_text: str) -> str:
    """A bundle config with every ``tskd_components.<path>.<name>`` replaced by ``scripts.<module>.<name>`` (the module
    that defines ``name``) and ``import tskd_components`` by ``import scripts``."""

    def rewrite(match: re.Match) -> str:
        parts = match.group(1).lstrip(".").split(".")
        for i in range(len(parts), 0, -1):  # the longest prefix that is a module; the rest is an attribute path
            try:
                module = importlib.import_module(".".join(["tskd_components", *parts[:i]]))
            except ModuleNotFoundError:
                continue
            obj = module
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            defined_in = getattr(obj, "__module__", module.__name__).rsplit(".", 1)[-1]
            if f"{defined_in}.py" not in {Path(m).name for m in SCRIPT_MODULES}:
                raise RuntimeError(f"config reference tskd_components{match.group(1)} lives in {defined_in}, which is not copied into scripts/")
            return f"scripts.{defined_in}.{parts[-1]}" if parts[i:] else f"scripts.{defined_in}"
        raise RuntimeError(f"config reference tskd_components{match.group(1)} does not resolve")

    config = json.loads(config_text)
    if "imports" in config:  # an overlay without imports keeps the base config's (a merged list would replace them)
        config["imports"] = [i for i in config["imports"] if i != "$import tskd_components"] + ["$import scripts"]
    text = json.dumps(config, indent=4)
    return _REFERENCE.sub(rewrite, text)
