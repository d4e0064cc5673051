"""The Frechet floor of each dataset: the distance between two random halves of its training images, on the
foundation stand-in's features and on the random ResNet-18's, at the diffusion models' size (the value a generator
drawing real images would score; reports before the floor existed read against it).

    python benchmarks/fid_floor.py --standin runs/foundation_v2/standin/standin.pth [--datasets hc18 ph2]
        [--data-root ../shared/data] [--size 64] [--seeds 5] [--out docs/results/synthesis/fid_floor.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from monai.data import Dataset

from tskd_components.data.dataset import read_dataset_info
from tskd_components.synthesis.diffusion import diffusion_preprocessing, synthesis_datalist
from tskd_components.synthesis.quality import StandinFeatures, frechet_floor
from tskd_components.synthesis.report import feature_network, features
from tskd_components.utils.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standin", required=True, help="the foundation stand-in's standin.pth")
    parser.add_argument("--datasets", nargs="+", default=["hc18", "ph2"])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--size", type=int, default=64, help="the diffusion models' sample size")
    parser.add_argument("--seeds", type=int, default=5, help="random splits into halves")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder, (net, description) = StandinFeatures(args.standin), feature_network()
    result = {"command": "python benchmarks/fid_floor.py " + " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                                for k, v in vars(args).items() if v is not None),
              "standin_sha256": encoder.sha256, "feature_network": description, "size": args.size, "datasets": {}}
    for name in args.datasets:
        root = f"{args.data_root}/{name}"
        channels = read_dataset_info(root).image_channels
        pre = diffusion_preprocessing(args.size, channels, augment=False)
        real = torch.stack([item["image"] for item in Dataset(synthesis_datalist(root), pre)])
        standin_f, random_f = encoder(real), features(net, real)  # features once; only the split into halves varies
        floors = {"standin_fid_floor": [frechet_floor(standin_f, s) for s in range(args.seeds)],
                  "fid_floor": [frechet_floor(random_f, s) for s in range(args.seeds)]}
        result["datasets"][name] = {"num_real": len(real), "channels": channels, **floors}
        print(f"{name} ({len(real)} training images, {channels} channel(s)): "
              + ", ".join(f"{k} {statistics.mean(v):.2f} (range {min(v):.2f}-{max(v):.2f})" for k, v in floors.items()), flush=True)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
