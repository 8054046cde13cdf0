"""The codec: the rate-distortion ssVAE (:mod:`models.rd`) behind the container of
:mod:`codec.bitstream` (format version 7; with the lossless head's Y and X chunks too). Any
image size (padded, cropped back), grey / RGBA / 16-bit input converted with a notice (kept
exactly by a lossless stream), and images above ``TILE_ABOVE_PIXELS`` coded as independent tiles,
each decoded level by level so a progressive decode shows every level of the whole image.

    codec = RDCodec()                                  # the shipped weights
    data = codec.encode(image, quality=4.0)            # q in the model's range: lambda = 0.0009 * 2^q
    data, q = codec.encode_to_rate(image, bpp=0.5)     # bisection on q
    for step in codec.decode_progressive(data):        # one image per level in the stream
        print(step.level, step.bytes_used, step.image.shape)
    exact = codec.encode(image, lossless=True)          # + an X chunk per tile: decodes bit for bit
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..models.io import LOSSLESS_WEIGHTS, WEIGHTS_DIR, load_any, load_lossless_head, weights_fingerprint
from ..models.rd import RDSSVAE
from ..models.transforms import pad_to_multiple

from .bitstream import (CALIBRATED_VERSION, COMPACT_VERSION, EXACT_VERSION, FORMAT_VERSION, LOSSY_VERSION, RD_VERSIONS, TABLED_VERSION, Chunk, ChunkType, Header, HeaderFlags, check_weights, level_ends,
                        read_stream, stream_fingerprint, write_stream)
from .dispatch import refuse_old_version
from .images import DEFAULT_TILE, TILE_ABOVE_PIXELS, LevelImage, RGBImage, original_pixels, tiles, to_rgb8
from .lossless_coder import LosslessTileCoder
from .rate_search import RateResult, search_quality
from .rd_coder import LevelRender, RDTileCoder

DEFAULT_RD_WEIGHTS = WEIGHTS_DIR / "ssvae-rd.safetensors"
DEFAULT_RD_QUALITY = 4.0
#: the lossy levels' q of a lossless stream when none is given: the smallest whole stream with the
#: session-10 head and session-11 RD weights, on six BSDS500 val photos (9.390 / 9.400 / 9.437 / 9.483
#: bpp at q = -1 / 0 / 1 / 2) and six Kodak images (10.295 / 10.285 / 10.309 / 10.343 at q = -1 / 0 /
#: 1 / 2; q = 2 had been best in session 8, with an earlier head)
DEFAULT_LOSSLESS_QUALITY = 0.0


class RDCodec:
    """The rate-distortion ssVAE as a progressive codec."""

    def __init__(self, weights: str | Path = DEFAULT_RD_WEIGHTS, device: str = "cpu",
                 lossless_weights: str | Path = LOSSLESS_WEIGHTS) -> None:
        """``lossless_weights``: the lossless head (loaded when a lossless stream is coded)."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}: use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        self.weights = Path(weights)
        model = load_any(self.weights)
        if not isinstance(model, RDSSVAE):
            raise ValueError(f"{self.weights} does not hold rate-distortion weights, which the codec needs")
        self.model = model
        self.fingerprint = weights_fingerprint(self.weights)
        self.coder = RDTileCoder(model, device)
        self.n_levels = model.n_levels
        self.q_range = model.config.quality_range
        self.default_quality = DEFAULT_RD_QUALITY
        self.default_lossless_quality = DEFAULT_LOSSLESS_QUALITY
        self.lossless_weights = Path(lossless_weights)
        self._lossless: LosslessTileCoder | None = None

    def lossless_coder(self) -> LosslessTileCoder:
        """The lossless head's coder (loaded on first use)."""
        if self._lossless is None:
            try:
                head = load_lossless_head(self.lossless_weights)
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
            if head.config.features and head.config.features != self.model.config.width:
                raise ValueError(f"the lossless head reads {head.config.features} feature channels, the RD model "
                                 f"renders from {self.model.config.width}")
            self._lossless = LosslessTileCoder(head, weights_fingerprint(self.lossless_weights))
            if self.model.config.pad_multiple % self._lossless.multiple:
                raise ValueError(f"the lossless head needs sides in multiples of {self._lossless.multiple}, "
                                 f"the RD model pads to {self.model.config.pad_multiple}")
        return self._lossless

    def check_quality(self, quality: float) -> float:
        q = round(float(quality), 2)
        lo, hi = self.q_range
        if not lo <= q <= hi:
            raise ValueError(f"quality must be in [{lo:g}, {hi:g}] for this model, got {quality}")
        return q

    # ----- encoding ---------------------------------------------------------------------------
    def encode(self, image: Image.Image | np.ndarray | RGBImage, levels: int | None = None,
               quality: float = DEFAULT_RD_QUALITY, tile: int | None = None, progress: bool = False,
               lossless: bool = False, max_error: int = 0, with_y: bool = False, version: int = FORMAT_VERSION) -> bytes:
        """Encode ``levels`` levels (default: all) at quality ``q`` (lambda = 0.0009 * 2^q).
        ``lossless``: every level, then per tile an X chunk that codes the original pixels
        (grey, RGB or RGBA) given the last level's render (Mentzer et al. 2020); with
        ``max_error`` N > 0 every colour sample decodes within N of the original instead.
        ``with_y``: per tile a Y chunk in the last level that codes y = x[::2, ::2] exactly
        (the lossless head's coarse stages, which the X chunk then leaves out), so that level
        shows the conditional reconstruction given y (CR). ``version``: the format version to
        write, the newest by default; 6 for readers of sessions 24-27 (no calibration in
        the Y and X chunks); 5 for readers of sessions 18-23; 2 (a lossy stream) or 4 (a
        lossless or CR one) for readers of sessions 9-17."""
        return self.encode_with_report(image, levels, quality, tile, progress, lossless, max_error, with_y, version)[0]

    def encode_with_report(self, image: Image.Image | np.ndarray | RGBImage, levels: int | None = None,
                           quality: float = DEFAULT_RD_QUALITY, tile: int | None = None,
                           progress: bool = False, lossless: bool = False, max_error: int = 0,
                           with_y: bool = False, version: int = FORMAT_VERSION) -> tuple[bytes, list[dict[str, Any]]]:
        """As :meth:`encode`, plus per chunk the model's estimated bits beside its actual size
        (None for Y and X chunks)."""
        rgb = image if isinstance(image, RGBImage) else to_rgb8(image)
        px = rgb.pixels
        h, w = px.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("empty image")
        levels = self.n_levels if levels is None else levels
        if not 1 <= levels <= self.n_levels:
            raise ValueError(f"levels must be in 1..{self.n_levels} for this model, got {levels}")
        if max_error and not lossless:
            raise ValueError("a max error is a bound of the lossless level: it needs lossless=True")
        exact = lossless or with_y
        if version not in (FORMAT_VERSION, CALIBRATED_VERSION, TABLED_VERSION, COMPACT_VERSION,
                           EXACT_VERSION if exact else LOSSY_VERSION):
            raise ValueError(f"format version {version} cannot hold this stream: write {FORMAT_VERSION}, "
                             f"{CALIBRATED_VERSION}, {TABLED_VERSION} or {COMPACT_VERSION}, or {LOSSY_VERSION} for a lossy stream, "
                             f"{EXACT_VERSION} for a lossless or CR one")
        if exact and levels != self.n_levels:
            raise ValueError(f"a lossless or --with-y stream holds every level ({self.n_levels}), not {levels}")
        q = self.check_quality(quality)
        tile = self._tile(h, w, tile)
        boxes = tiles(h, w, tile)
        coder = self.lossless_coder() if exact else None
        original = original_pixels(rgb) if exact else None
        per_level: list[list[tuple[int, bytes, float | None]]] = [[] for _ in range(levels)]
        ys: list[tuple[int, bytes, float | None]] = []
        xs: list[tuple[int, bytes, float | None]] = []
        for t, (r0, r1, c0, c1) in enumerate(tqdm(boxes, desc="encode", unit="tile", disable=not progress or len(boxes) == 1)):
            x = torch.from_numpy(np.ascontiguousarray(px[r0:r1, c0:c1].transpose(2, 0, 1))).unsqueeze(0)
            coded, render = self.coder.encode(self._pad(x), q, levels, final_render=exact, version=version)
            for k, (payload, bits) in enumerate(coded):
                per_level[k].append((t, payload, bits))
            if coder is not None and original is not None and render is not None:
                y, xp = coder.encode(original[r0:r1, c0:c1], render, q, max_error, with_y, lossless, version)
                ys += [(t, y, None)] if y is not None else []
                xs += [(t, xp, None)] if xp is not None else []
        flags = (HeaderFlags.LOSSLESS if lossless else HeaderFlags.NONE) | (HeaderFlags.Y_CHUNKS if with_y else HeaderFlags.NONE)
        header = Header(height=h, width=w, channels=rgb.channels, levels=self.n_levels - 1, quality=q,
                        fingerprint=stream_fingerprint(self.fingerprint, version), tile_height=tile, tile_width=tile,
                        version=version, flags=flags)
        kinds = [ChunkType.U] + [ChunkType.Z] * (levels - 1)
        chunks = [Chunk(kinds[k], k, payload, t) for k, row in enumerate(per_level) for t, payload, _ in row]
        chunks += [Chunk(ChunkType.Y, levels - 1, payload, t) for t, payload, _ in ys]
        chunks += [Chunk(ChunkType.X, levels, payload, t) for t, payload, _ in xs]
        per_level += [ys, xs]
        report = [{"type": c.type.name, "level": c.level, "tile": c.tile, "bytes": len(c.payload), "estimated_bits": b}
                  for c, b in zip(chunks, [b for row in per_level for _, _, b in row])]
        return write_stream(header, chunks), report

    def encode_to_rate(self, image: Image.Image | np.ndarray | RGBImage, bpp: float | None = None,
                       size: int | None = None, levels: int | None = None, tile: int | None = None) -> RateResult:
        """The stream nearest a target rate (``bpp``, of the whole file) or size in bytes, by
        bisection on the quality (:func:`codec.rate_search.search_quality`)."""
        rgb = image if isinstance(image, RGBImage) else to_rgb8(image)
        h, w = rgb.pixels.shape[:2]
        if (bpp is None) == (size is None):
            raise ValueError("give exactly one of a target bpp or a target size")
        target = size if size is not None else bpp * h * w / 8.0
        return search_quality(lambda q: self.encode(rgb, levels, q, tile), float(target), *self.q_range)

    # ----- decoding ---------------------------------------------------------------------------
    def decode(self, data: bytes, levels: int | None = None) -> np.ndarray:
        """The image at ``levels`` (default: the highest whole level in the stream; level L+1 of
        a lossless stream is the original, bit for bit)."""
        last = None
        for step in self.decode_progressive(data, levels, only_last=True):
            last = step
        assert last is not None
        return last.image

    def decode_progressive(self, data: bytes, levels: int | None = None, only_last: bool = False,
                           progress: bool = False) -> Iterator[LevelImage]:
        """Yield the image of every whole level (1, 2, ...) up to ``levels``, with the bytes used.
        Level L+1 of a lossless stream is the original (grey (H, W), RGB or RGBA (H, W, 4)); with
        Y chunks, level L is the conditional reconstruction given y (label CR<L>)."""
        parsed = read_stream(data)
        hd = parsed.header
        self._check_header(hd)
        boxes = tiles(hd.height, hd.width, hd.tile_height if hd.tiled else 0)
        payloads: list[dict[int, bytes]] = [{} for _ in boxes]   # latents and X by chunk level
        ys: list[bytes | None] = [None for _ in boxes]
        for c in parsed.chunks:
            if c.type is ChunkType.Y:
                ys[c.tile] = c.payload
            else:
                payloads[c.tile][c.level] = c.payload
        available = min(_prefix_levels(p) for p in payloads) if parsed.chunks else 0
        if available == 0:
            raise ValueError("the stream holds no whole level: nothing to decode" + (" (file truncated)" if parsed.truncated else ""))
        top = available if levels is None else levels
        if not 1 <= top <= available:
            raise ValueError(f"level {top} is not in this stream (it holds levels 1..{available})")
        L = self.n_levels
        cr = top >= L and all(y is not None for y in ys)  # level L shows the CR image
        exact = top > L or cr  # the head runs: the last render comes from the exact path, padded
        coder = self.lossless_coder() if exact else None
        # every level of a lossless or CR stream (or of its truncation) renders exactly: the same
        # pixels on any thread count and CPU, so a truncated stream shows what the full one did
        precise = bool(hd.flags & (HeaderFlags.LOSSLESS | HeaderFlags.Y_CHUNKS))
        want = {top} if only_last else set(range(1, top + 1))
        renders = (want - {L + 1}) | ({L} if exact else set())
        walks = []
        for (r0, r1, c0, c1), p in zip(boxes, payloads):
            size = (r1 - r0, c1 - c0)
            padded = self._padded(*size)
            walks.append(self.coder.decode([p[k] for k in range(min(top, L))], hd.quality, padded,
                                           padded if exact else size, renders, precise_render=precise, version=hd.version))
        ends = level_ends(parsed)
        last: list[LevelRender] = []
        known: list[torch.Tensor | None] = [None for _ in boxes]  # per tile: the CR walk's Y stages
        for level in sorted(renders | want):
            bar = tqdm(list(zip(boxes, walks, payloads)), desc=f"level {level}", unit="tile",
                       disable=not progress or len(boxes) == 1)
            if level > L:
                assert coder is not None
                canvas = np.zeros((hd.height, hd.width, max(hd.channels, 1)), dtype=np.uint8)
                bound = 0
                for ((r0, r1, c0, c1), _, p), render, y, kn in zip(bar, last, ys, known):
                    canvas[r0:r1, c0:c1] = coder.decode(y, p[L], render, (r1 - r0, c1 - c0), hd.channels, hd.quality, kn,
                                                                  hd.version)
                    bound = max(bound, coder.max_error(p[L]))
                yield LevelImage(level, f"max error {bound}" if bound else "lossless",
                                 canvas[..., 0] if hd.channels == 1 else canvas, ends.get(level, parsed.header_size))
                continue
            canvas = np.zeros((hd.height, hd.width, 3), dtype=np.uint8)
            for t, (((r0, r1, c0, c1), walk, _), y) in enumerate(zip(bar, ys)):
                lv, rendered = next(walk)
                assert lv == level
                if level == max(renders):
                    walk.close()  # frees the tile's suspended top-down state now, not after every tile
                if exact and level == L:
                    last.append(rendered)
                if cr and level == L and level in want:
                    assert coder is not None and y is not None
                    canvas[r0:r1, c0:c1], known[t] = coder.reconstruct_given_y(y, rendered, (r1 - r0, c1 - c0),
                                                                              hd.channels, hd.quality, hd.version)
                else:
                    canvas[r0:r1, c0:c1] = rendered.pixels[:, :r1 - r0, :c1 - c0].permute(1, 2, 0).numpy()
            if level in want:
                out = canvas.mean(axis=2).round().astype(np.uint8) if hd.channels == 1 else canvas
                yield LevelImage(level, f"CR{level}" if cr and level == L else f"L{level}", out, ends.get(level, parsed.header_size))

    def latent_estimates(self, data: bytes) -> list[float | None]:
        """Per chunk: the model's information content (bits) of its symbols, to set beside the
        chunk's size (``ssvcodec info``). Runs the decoder's top-down pass without rendering."""
        parsed = read_stream(data)
        hd = parsed.header
        self._check_header(hd)
        boxes = tiles(hd.height, hd.width, hd.tile_height if hd.tiled else 0)
        est: dict[tuple[int, int], float] = {}
        for t, (r0, r1, c0, c1) in enumerate(boxes):
            p = {c.level: c.payload for c in parsed.chunks if c.tile == t and c.type is not ChunkType.Y}
            n = min(_prefix_levels(p), self.n_levels)  # an X chunk has no latent estimate
            for k, bits in enumerate(self.coder.estimate([p[k] for k in range(n)], hd.quality, self._padded(r1 - r0, c1 - c0), hd.version)):
                est[(t, k)] = bits
        return [est.get((c.tile, c.level)) if c.type in (ChunkType.U, ChunkType.Z) else None for c in parsed.chunks]

    # ----- helpers ----------------------------------------------------------------------------
    def _check_header(self, hd: Header) -> None:
        refuse_old_version(hd.version)
        if hd.version not in RD_VERSIONS:
            raise ValueError(f"format version {hd.version} is not a rate-distortion stream this codec decodes")
        check_weights(hd, self.fingerprint)
        if hd.levels != self.n_levels - 1:
            raise ValueError(f"stream has {hd.levels + 1} levels, these weights have {self.n_levels}")

    def _tile(self, h: int, w: int, tile: int | None) -> int:
        if tile is None:
            tile = DEFAULT_TILE if h * w > TILE_ABOVE_PIXELS else 0
        m = self.model.config.pad_multiple
        if tile and (tile % m or tile < m):
            raise ValueError(f"tile size must be a positive multiple of {m}")
        return tile

    def _padded(self, h: int, w: int) -> tuple[int, int]:
        m = self.model.config.pad_multiple
        return (-(-h // m) * m, -(-w // m) * m)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x, self.model.config.pad_multiple)


def _prefix_levels(p: dict[int, bytes]) -> int:
    """How many levels 1, 2, ... a tile's chunks hold without a gap."""
    n = 0
    while n in p:
        n += 1
    return n
