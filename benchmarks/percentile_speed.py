"""How long the percentile scaling's percentiles take: counted (``scripts.numpy_transforms.percentiles``) against
``numpy.percentile``, on the slices the bundle scales, printed as figures (not a test).

    python benchmarks/percentile_speed.py [DATASET/valid] [--n 50] [--repeats 5]

Two kinds of slice, as the inference sees them: the native grey slice (whole numbers, 640x640; the outline
network's crops are taken from it after scaling) and the network's 256x256 input after the anti-aliased resize
(fractions: ``percentiles`` hands it to numpy after a look at a sample). Alternating runs, medians per slice.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bundle"))


def main() -> None:
    from PIL import Image

    from scripts.numpy_transforms import anti_alias, percentiles

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bundle", "sample_data", "valid")
    ap.add_argument("images", nargs="?", default=default)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.images, "*.jpg")))[: args.n]
    native = [np.asarray(Image.open(f).convert("L"), np.float32)[None] for f in files]
    # the 256x256 input: smoothed, then every other pixel (fractions, as after the resize)
    resized = [
        np.ascontiguousarray(np.asarray(anti_alias(a, (256, 256)))[:, ::2, ::2][:, :256, :256]) + 0.5 for a in native
    ]
    q = (0.5, 99.5)
    results = {}
    for name, slices in (("native_640_whole", native), ("resized_256_fractions", resized)):
        for a in slices:
            assert np.array_equal(percentiles(a, q), np.percentile(a, q))
        times = {"numpy": [], "counted": []}
        for _ in range(args.repeats):
            for label, f in (("numpy", np.percentile), ("counted", percentiles)):
                for a in slices:
                    t0 = time.perf_counter()
                    f(a, q)
                    times[label].append((time.perf_counter() - t0) * 1000)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {"numpy_ms": round(med["numpy"], 3), "counted_ms": round(med["counted"], 3),
                         "ratio": round(med["counted"] / med["numpy"], 2), "slices": len(slices)}  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
