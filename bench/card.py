"""Record shipped weights' fixed card check: ``python -m ssvcodec.bench.card WEIGHTS``.

Codes a fixed Kodak crop at a fixed quality with real bitstreams and writes, into the ``meta`` of
the weights' JSON: for rate-distortion weights the bytes a decoder reads for each level and each
level's PSNR; for a lossless head the whole lossless stream's bytes and bpp (with the shipped RD
weights) and that it decodes bit for bit. ``tests/test_weights.py`` recomputes them (decoding is
deterministic, so they must match) and checks that the model card states the last level's PSNR
(the lossless stream's bpp).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .metrics import psnr

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
CHECK = {"image": "kodim23.png", "box": [128, 384, 256, 640], "quality": 4.0}


def card_check(weights: Path) -> dict:
    import torch

    from ..codec.rd_api import RDCodec

    torch.set_num_threads(1)
    img = np.asarray(Image.open(KODAK / CHECK["image"]).convert("RGB"))
    r0, r1, c0, c1 = CHECK["box"]
    crop = img[r0:r1, c0:c1]
    codec = RDCodec(weights)
    steps = list(codec.decode_progressive(codec.encode(crop, quality=CHECK["quality"])))
    return {**CHECK, "bytes": [s.bytes_used for s in steps], "psnr": [round(psnr(crop, s.image), 2) for s in steps]}


def lossless_card_check(head: Path) -> dict:
    import torch

    from ..codec.rd_api import RDCodec

    torch.set_num_threads(1)
    img = np.asarray(Image.open(KODAK / CHECK["image"]).convert("RGB"))
    r0, r1, c0, c1 = CHECK["box"]
    crop = img[r0:r1, c0:c1]
    codec = RDCodec(lossless_weights=head)
    data = codec.encode(crop, quality=CHECK["quality"], lossless=True)
    exact = bool(np.array_equal(codec.decode(data), crop))
    return {**CHECK, "rd_weights": codec.weights.name, "bytes": len(data),
            "bpp": round(8 * len(data) / crop.shape[0] / crop.shape[1], 3), "bit_exact": exact}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.card", description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", type=Path)
    a = ap.parse_args(argv)
    js = a.weights.with_suffix(".json")
    info = json.loads(js.read_text())
    check = lossless_card_check(a.weights) if info["config"].get("kind") == "lossless" else card_check(a.weights)
    info.setdefault("meta", {})["card_check"] = check
    js.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(json.dumps(check))
    return 0


if __name__ == "__main__":
    sys.exit(main())
