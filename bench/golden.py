"""Record the golden streams the tests decode: ``python -m ssvcodec.bench.golden [--image PATH]``.

For every supported format version, one stream of the shipped weights and the SHA-256 of the PNG
of each level it decodes to:

- ``tests/golden/rd-v2.ssv``: the default lossy codec (rate-distortion model), quality 4;
- ``tests/golden/elbo-v1.ssv``: the ELBO model with ``--with-y --lossless``, quality 4.

The tests (``tests/test_rd_codec.py``, ``tests/test_codec.py``) fail if decoding any of them
changes. Re-record only when the shipped weights change on purpose (the streams name their
weights' fingerprint), and say so in the commit.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"


def png_sha256(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def record(name: str, data: bytes, codec: object, weights: Path, note: str) -> Path:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / f"{name}.ssv").write_bytes(data)
    levels = {str(s.level): png_sha256(s.image) for s in codec.decode_progressive(data)}  # type: ignore[attr-defined]
    meta = {"stream": f"{name}.ssv", "stream_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "weights": weights.name, "png_sha256": levels, "made_with": note}
    path = GOLDEN / f"{name}.json"
    path.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    import torch

    from ..codec.api import Codec
    from ..codec.rd_api import DEFAULT_RD_WEIGHTS, RDCodec
    from ..models.io import DEFAULT_WEIGHTS

    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.golden", description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    img = np.asarray(Image.open(a.image).convert("RGB"))[96:224, 192:384]  # a 128x192 crop
    rd = RDCodec()
    p = record("rd-v2", rd.encode(img, quality=4.0), rd, DEFAULT_RD_WEIGHTS,
               f"RDCodec().encode(crop [96:224, 192:384] of {a.image.name}, quality=4.0)")
    print(f"wrote {p}")
    small = img[:48, :64]
    elbo = Codec()
    p = record("elbo-v1", elbo.encode(small, quality=4.0, with_y=True, lossless=True), elbo, DEFAULT_WEIGHTS,
               f"Codec().encode(crop [96:144, 192:256] of {a.image.name}, quality=4.0, with_y=True, lossless=True)")
    print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
