"""What the lossless head reaches today: ``python -m ssvcodec.bench.lossless_estimate CHECKPOINT
[--qualities 0,4,8] [--images kodim01.png,...]``.

For each image and lossy quality q: the real lossy stream (``RDCodec.encode``, every level, its
bytes) and the head's ideal code length of x given the image that stream decodes to (the render a
decoder has), with the head's snapped parameters as the coder would use them; the sum is the
size a progressive-to-lossless stream would have, up to the entropy coder's few bytes and the
chunk's 18. Printed beside WebP lossless from ``bench/results/kodak.json``. An estimate for
issue 13 while the head is trained, not a codec: the stream does not hold the chunk yet.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_IMAGES = ("kodim01.png", "kodim04.png", "kodim07.png", "kodim13.png", "kodim19.png", "kodim23.png")


def webp_lossless_bpp(images: list[str]) -> float | None:
    """Mean WebP-lossless bpp of ``images`` in the committed Kodak result, if all are there."""
    path = ROOT / "bench" / "results" / "kodak.json"
    if not path.exists():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["codec"] == "webp-lossless" and r["image"] in images]
    return float(np.mean([r["bpp"] for r in rows])) if len(rows) == len(images) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a train_lossless checkpoint (its EMA weights are used)")
    ap.add_argument("--qualities", default="0,4,8")
    ap.add_argument("--images", default=",".join(DEFAULT_IMAGES), help="Kodak file names")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from ..codec.rd_api import RDCodec
    from ..models.config import LosslessConfig
    from ..models.lossless import LosslessHead, stages

    torch.set_num_threads(args.threads)
    ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    head = LosslessHead(LosslessConfig.from_dict(json.loads(ck["config"])))
    head.load_state_dict(ck["ema"])
    head.eval()
    codec = RDCodec(ck.get("rd_weights") or ROOT / "weights" / "ssvae-rd.safetensors")
    images = args.images.split(",")
    xs = [np.asarray(Image.open(KODAK / f).convert("RGB")) for f in images]
    m = head.multiple
    print(f"head: {args.checkpoint}, step {json.loads(ck['counters'])['step']}, {sum(p.numel() for p in head.parameters())} "
          f"parameters; RD weights {codec.weights}; {len(images)} Kodak images")
    for q in (float(v) for v in args.qualities.split(",")):
        prefix = rest = 0.0
        per_stage = np.zeros(len(stages(head.config.depth)))
        for x in xs:
            h, w = (x.shape[0] // m) * m, (x.shape[1] // m) * m  # Kodak's sides are multiples already
            data = codec.encode(x, quality=q)
            xhat = codec.decode(data)
            px = x.shape[0] * x.shape[1]
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a[:h, :w].transpose(2, 0, 1))).unsqueeze(0)  # noqa: E731
            with torch.no_grad():
                bits = head.stage_bits(t(x), t(xhat), torch.tensor([q]), snapped=True)[0].numpy()
            prefix += 8 * len(data) / px / len(xs)
            rest += bits.sum() / px / len(xs)
            per_stage += bits / px / len(xs)
        print(f"q={q:g}: lossy stream {prefix:.3f} + head {rest:.3f} = {prefix + rest:.3f} bpp; "
              f"per stage (bits per pixel of x) {', '.join(f'{v:.3f}' for v in per_stage)}", flush=True)
    ref = webp_lossless_bpp(images)
    if ref is not None:
        print(f"WebP lossless on these images: {ref:.3f} bpp (bench/results/kodak.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
