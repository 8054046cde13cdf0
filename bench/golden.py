"""Record the golden streams the tests decode: ``python -m ssvcodec.bench.golden [--image PATH]``.

For every format version the codec decodes (8, 7, 6, 5, 4 and 2), streams of the shipped weights, the SHA-256
of the PNG of each level they decode to, and (the default lossy stream) those PNGs themselves:

- ``tests/golden/rd-v7.ssv``: the default lossy codec (rate-distortion model), quality 4;
- ``tests/golden/rd-v7-lossless.ssv``: the same model with ``--lossless`` and the shipped lossless
  head, an RGBA crop (its alpha a ramp), quality 4: every level, the lossy ones included, comes
  from the exact integer render and the exact integer head, so its PNGs match on every CPU kind,
  and the last is the crop itself; ``rd-v6-lossless.ssv`` the same without the head's
  calibration block (sessions 24-27); ``rd-v7-lossless-rgb.ssv`` the lossy stream's RGB crop with
  ``--lossless``, large enough that its X chunk carries a calibration block (30 rows);
- ``tests/golden/rd-v8-lossless-jpeg.ssv``: that crop saved as a JPEG (Pillow, quality 90, 4:2:0)
  and decoded, with ``--lossless`` in format version 8: its X chunk carries chroma planes
  (:mod:`codec.jpeg_planes`); ``rd-v8.ssv`` the lossy stream in version 8 (version 7's but for
  the version byte);
- ``tests/golden/rd-v6.ssv`` and ``rd-v5.ssv``: the lossy stream as sessions 24-27 and 18-23 wrote
  it (per-scale tables; a quantized Gaussian per latent symbol), and ``rd-v2.ssv`` and ``rd-v4.ssv``:
  the lossy and lossless streams in the fixed layout of sessions 9-17 (``RDCodec.encode(version=...)``),
  which the codec still decodes.

``tests/test_golden.py`` fails if decoding any of them changes. A lossy stream's renders run in
multi-threaded float32 (no later prior reads them, so they do not affect decodability), and another
CPU kind may round a rare sample the other way; on a hash mismatch the test therefore compares the
pixels with the recorded PNG (see :func:`renders_agree`), while the symbols stay exact (each level's
checksum). Format versions 1 (the ELBO model's streams of sessions 1-7) and 3 (session 8's lossless
streams, coded against a float64 render) are no longer decoded, so they have no golden stream.
Re-record only when the shipped weights change on purpose (the streams name their weights'
fingerprint), and say so in the commit.
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


#: A render on another CPU kind may differ from the recorded one by 1 in at most this fraction of
#: its samples (float32 rounding); a changed model or coder differs by far more.
MAX_FLIPPED = 1e-3


def renders_agree(got: np.ndarray, want: np.ndarray) -> tuple[bool, str]:
    """Whether a decoded level equals the recorded PNG up to float32 rounding: same shape, no
    sample off by more than 1, at most ``MAX_FLIPPED`` of them off by 1."""
    if got.shape != want.shape:
        return False, f"shape {got.shape} != {want.shape}"
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    frac = float((d > 0).mean())
    return bool(d.max() <= 1 and frac <= MAX_FLIPPED), f"max |diff| {int(d.max())}, {frac:.2e} of samples differ"


def record(name: str, data: bytes, codec: object, weights: Path, note: str, keep_png: bool = False,
           extra: dict | None = None) -> Path:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / f"{name}.ssv").write_bytes(data)
    levels: dict[str, str] = {}
    for s in codec.decode_progressive(data):  # type: ignore[attr-defined]
        levels[str(s.level)] = png_sha256(s.image)
        if keep_png:
            Image.fromarray(s.image).save(GOLDEN / f"{name}_L{s.level}.png")
    from ..models.io import cpu_name

    meta = {"stream": f"{name}.ssv", "stream_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "weights": weights.name, "png_sha256": levels, "made_with": note, "cpu": cpu_name()}
    if keep_png:
        meta["png"] = {lv: f"{name}_L{lv}.png" for lv in levels}
    meta.update(extra or {})
    path = GOLDEN / f"{name}.json"
    path.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    import torch

    from ..codec.rd_api import DEFAULT_RD_WEIGHTS, RDCodec

    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.golden", description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    img = np.asarray(Image.open(a.image).convert("RGB"))[96:224, 192:384]  # a 128x192 crop
    rd = RDCodec()
    from ..models.io import LOSSLESS_WEIGHTS

    alpha = np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))
    rgba = np.concatenate([img[:64, :96], alpha[..., None]], 2)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90, subsampling=2)
    jpeg = np.asarray(Image.open(buf).convert("RGB"))
    rgb, ramp = (img, "crop [96:224, 192:384]"), (rgba, "crop [96:160, 192:288]")
    jpg = (jpeg, "crop [96:224, 192:384] saved as JPEG (quality 90, 4:2:0) and decoded")
    for name, lossless, version, (pixels, what) in (
            ("rd-v7", False, 7, rgb), ("rd-v7-lossless", True, 7, ramp), ("rd-v7-lossless-rgb", True, 7, rgb),
            ("rd-v8", False, 8, rgb), ("rd-v8-lossless-jpeg", True, 8, jpg),
            ("rd-v6", False, 6, rgb), ("rd-v6-lossless", True, 6, ramp), ("rd-v5", False, 5, rgb),
            ("rd-v2", False, 2, rgb), ("rd-v4", True, 4, ramp)):
        call = (f"RDCodec().encode({what} of {a.image.name}" + (" + a horizontal alpha ramp 0..255" if pixels is rgba else "")
                + ", quality=4.0" + (", lossless=True" if lossless else "") + f", version={version})")
        extra = {"lossless_weights": LOSSLESS_WEIGHTS.name, "input_png_sha256": png_sha256(pixels)} if lossless else None
        p = record(name, rd.encode(pixels, quality=4.0, lossless=lossless, version=version), rd, DEFAULT_RD_WEIGHTS,
                   call, keep_png=name == "rd-v7", extra=extra)
        if name in ("rd-v8", "rd-v6", "rd-v5", "rd-v2"):  # the same symbols and renders as rd-v7: its PNGs serve all
            meta, v7 = json.loads(p.read_text()), json.loads((GOLDEN / "rd-v7.json").read_text())
            assert meta["png_sha256"] == v7["png_sha256"], f"the {name} and rd-v7 streams decode to different renders"
            p.write_text(json.dumps({**meta, "png": v7["png"]}, indent=1) + "\n")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
