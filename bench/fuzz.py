"""Fuzz the decoder below the CRC layer: ``python -m ssvcodec.bench.fuzz [--cases 100000] [--weights W]``.

Each case takes a valid stream, mutates its chunk payloads (bit flips, byte overwrites, cuts,
insertions, swaps of whole payloads), recomputes every CRC so the container accepts the stream,
and decodes it in-process. A case ends in one of:

- ``error``: a clean ``BitstreamError`` / ``ValueError`` (what the CLI reports in one line);
- ``image``: a well-formed image of the header's size (uint8);
- ``crash``: any other exception, or an image of the wrong shape or type (a bug);
- ``slow``: a decode over ``--slow-s`` seconds (a would-be hang).

Prints the counts and writes them as JSON (``--out``). The codec is the default lossy one (the
newest format version) on a small image; ``--weights`` picks the weights (default: the shipped ones, else a
random tiny model of the same layout, which exercises the same code paths). ``--lossless``: the
streams are lossless, near-lossless and ``--with-y`` ones of a 128x128 Kodak crop (kodim23) with
the shipped lossless head, and a lossless one of that crop saved as a JPEG and decoded, so the Y and
X chunks (their calibration blocks, format version 7, and chroma planes, version 8) are mutated
too; the result counts the calibration rows and chroma-plane bytes the valid streams hold.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """A copy of ``data`` with mutated payloads and valid CRCs."""
    from ..codec.bitstream import Chunk, read_stream, write_stream

    parsed = read_stream(data)
    chunks = list(parsed.chunks)
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(len(chunks)))
        c = chunks[i]
        p = bytearray(c.payload)
        op = int(rng.integers(6))
        if op == 0 and p:                                    # flip a bit
            p[int(rng.integers(len(p)))] ^= 1 << int(rng.integers(8))
        elif op == 1 and p:                                  # overwrite a byte
            p[int(rng.integers(len(p)))] = int(rng.integers(256))
        elif op == 2:                                        # cut the payload short
            p = p[: int(rng.integers(len(p) + 1))]
        elif op == 3:                                        # insert random bytes
            at = int(rng.integers(len(p) + 1))
            p[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 4:                                        # another chunk's payload
            p = bytearray(chunks[int(rng.integers(len(chunks)))].payload)
        else:                                                # random payload of the same length
            p = bytearray(rng.integers(0, 256, len(p), dtype=np.uint8).tobytes())
        chunks[i] = Chunk(c.type, c.level, bytes(p), c.tile)
    return write_stream(parsed.header, chunks)


def run(cases: int, weights: Path | None, seed: int = 0, slow_s: float = 5.0, progress: bool = True,
        lossless: bool = False) -> dict:
    import torch
    from tqdm import tqdm

    from ..codec.bitstream import BitstreamError
    from ..codec.rd_api import DEFAULT_RD_WEIGHTS, RDCodec

    torch.set_num_threads(1)
    if weights is None and DEFAULT_RD_WEIGHTS.exists():
        weights = DEFAULT_RD_WEIGHTS
    if weights is None:  # a random model of the shipped layout
        import tempfile

        from ..models.config import RDConfig
        from ..models.io import save_weights
        from ..models.rd import RDSSVAE
        torch.manual_seed(seed)
        weights = Path(tempfile.mkdtemp()) / "random.safetensors"
        save_weights(RDSSVAE(RDConfig(width=16, latent_channels=(8, 8, 8), emb_dim=8)), weights)
    codec = RDCodec(weights)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:80]
    img = np.stack([128 + 100 * np.sin(xx / 7), 128 + 90 * np.cos(yy / 5), (xx * yy) % 256], 2).astype(np.uint8)
    rows = planes = 0
    if lossless:
        from PIL import Image

        from ..codec.bitstream import ChunkType, read_stream
        from ..codec.lossless_coder import LosslessTileCoder

        kodak = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak" / "kodim23.png"
        img = np.asarray(Image.open(kodak).convert("RGB"))[128:256, 256:384]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        jpeg = np.asarray(Image.open(buf).convert("RGB"))  # its X chunk carries chroma planes
        streams = [codec.encode(img, quality=0.0, lossless=True), codec.encode(img, quality=4.0, lossless=True, max_error=2),
                   codec.encode(img, quality=2.0, lossless=True, with_y=True), codec.encode(jpeg, quality=0.0, lossless=True)]
        chunks = [c for s in streams for c in read_stream(s).chunks if c.type in (ChunkType.X, ChunkType.Y)]
        rows = sum(len(LosslessTileCoder.calibration_rows(c.payload, c.type.name)) for c in chunks)
        planes = sum(LosslessTileCoder.planes_size(c.payload) for c in chunks if c.type is ChunkType.X)
    else:
        streams = [codec.encode(img, quality=q) for q in (0.0, 4.0, 8.0)]
    counts: Counter[str] = Counter()
    crashes: list[str] = []
    worst = 0.0
    for i in tqdm(range(cases), disable=not progress, unit="case", mininterval=2):
        bad = mutate(streams[i % len(streams)], rng)
        t0 = time.perf_counter()
        try:
            out = codec.decode(bad)
            kind = "image" if out.shape == img.shape and out.dtype == np.uint8 else "crash"
            if kind == "crash":
                crashes.append(f"case {i}: image of shape {out.shape}, {out.dtype}")
        except (BitstreamError, ValueError):
            kind = "error"
        except Exception as e:  # noqa: BLE001 - the point is to count them
            kind = "crash"
            crashes.append(f"case {i}: {type(e).__name__}: {e}")
        dt = time.perf_counter() - t0
        worst = max(worst, dt)
        counts["slow" if dt > slow_s and kind != "crash" else kind] += 1
    return {"cases": cases, "counts": dict(counts), "crashes": crashes[:20], "max_decode_s": worst,
            "weights": weights.name, "image": list(img.shape), "seed": seed,
            **({"lossless": True, "calibration_rows": rows, "chroma_plane_bytes": planes} if lossless else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow-s", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None, help="write the counts here (JSON)")
    ap.add_argument("--lossless", action="store_true", help="lossless, near-lossless and --with-y streams of a Kodak crop")
    a = ap.parse_args(argv)
    t0 = time.time()
    res = run(a.cases, a.weights, a.seed, a.slow_s, lossless=a.lossless)
    res["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 1 if res["counts"].get("crash") or res["counts"].get("slow") else 0


if __name__ == "__main__":
    sys.exit(main())
