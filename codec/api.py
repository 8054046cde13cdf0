"""The ELBO model's codec (format version 1: RS/CR levels, ``--with-y``, ``--lossless``); the
default lossy codec is :class:`codec.rd_api.RDCodec`. Encode an image to bytes, decode bytes
(optionally up to a level), decode progressively. Any size (padded, cropped back), grey / RGBA /
16-bit input converted with a notice, and images above ``TILE_ABOVE_PIXELS`` coded as independent
tiles in bounded memory.

    codec = Codec()                                   # the shipped ELBO weights
    data = codec.encode(image, levels=3, quality=4)   # PIL image or HxW(x3/4) uint8/uint16 array
    for step in codec.decode_progressive(data):       # one image per whole level in the stream
        print(step.level, step.bytes_used, step.image.shape)
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..models.io import DEFAULT_WEIGHTS, load_model, weights_fingerprint

from .bitstream import (ELBO_VERSION, HEADER_SIZE, Chunk, ChunkType, Header, HeaderFlags, check_weights, level_ends,
                        read_stream, write_stream)
from .images import DEFAULT_TILE, TILE_ABOVE_PIXELS, LevelImage, RGBImage, load_image, tiles as _tiles, to_rgb8  # noqa: F401
from .progressive import CodedChunk, CodingOptions, TileCoder, latent_bits
from .quantize import DEFAULT_QUALITY



def _header_tiles(hd: Header) -> list[tuple[int, int, int, int]]:
    return _tiles(hd.height, hd.width, hd.tile_height if hd.tiled else 0)


class Codec:
    """The ELBO-trained ssVAE wrapped as a progressive codec (format version 1): RS/CR levels,
    ``--with-y`` and ``--lossless``. Lossy coding by default uses :class:`codec.rd_api.RDCodec`."""

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}: use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        self.weights = Path(weights)
        self.model = load_model(self.weights)        # the decoder side always runs on the CPU
        self.fingerprint = weights_fingerprint(self.weights)
        self.coder = TileCoder(self.model, load_model(self.weights, "cuda") if device == "cuda" else None)
        self.K = self.model.levels
        self.device = device

    # ----- encoding ---------------------------------------------------------------------------
    def encode(self, image: Image.Image | np.ndarray | RGBImage, levels: int | None = None,
               quality: float = DEFAULT_QUALITY, with_y: bool = False, lossless: bool = False,
               tile: int | None = None, progress: bool = False) -> bytes:
        """Encode an image; ``levels`` defaults to every latent level (K+1). ``lossless`` adds
        a last chunk with x itself (and implies ``with_y``): the decode is then bit-exact."""
        return self.encode_with_report(image, levels, quality, with_y, lossless, tile, progress)[0]

    def encode_with_report(self, image: Image.Image | np.ndarray | RGBImage, levels: int | None = None,
                           quality: float = DEFAULT_QUALITY, with_y: bool = False, lossless: bool = False,
                           tile: int | None = None, progress: bool = False) -> tuple[bytes, list[dict[str, Any]]]:
        """As :meth:`encode`, plus per chunk the model's estimated bits beside its actual size."""
        rgb = image if isinstance(image, RGBImage) else to_rgb8(image)
        px = rgb.pixels
        h, w = px.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("empty image")
        levels = self.K + 1 if levels is None else levels
        with_y = with_y or lossless
        quality = round(float(quality), 2)
        opts = CodingOptions(levels, quality, with_y, lossless)
        if tile is None:
            tile = DEFAULT_TILE if h * w > TILE_ABOVE_PIXELS else 0
        if tile:
            m = self.model.config.pad_multiple
            if tile % m or tile < m:
                raise ValueError(f"tile size must be a positive multiple of {m}")
        boxes = _tiles(h, w, tile)
        per_tile: list[tuple[int, CodedChunk]] = []
        for t, (r0, r1, c0, c1) in enumerate(tqdm(boxes, desc="encode", unit="tile", disable=not progress or len(boxes) == 1)):
            x = torch.from_numpy(np.ascontiguousarray(px[r0:r1, c0:c1].transpose(2, 0, 1))).unsqueeze(0)
            for c in self.coder.encode(self.model.pad(x), opts, progress=progress and len(boxes) == 1):
                per_tile.append((t, c))
        order = {ChunkType.U: 0, ChunkType.Y: 1, ChunkType.Z: 2, ChunkType.X: 3}
        per_tile.sort(key=lambda tc: (tc[1].progressive_level, order[tc[1].type], tc[0]))
        flags = (HeaderFlags.Y_CHUNKS if with_y else HeaderFlags.NONE) | (HeaderFlags.LOSSLESS if lossless else HeaderFlags.NONE)
        header = Header(height=h, width=w, channels=rgb.channels, levels=self.K, quality=quality,
                        fingerprint=self.fingerprint, flags=flags, tile_height=tile, tile_width=tile,
                        version=ELBO_VERSION)
        data = write_stream(header, [Chunk(c.type, c.level, c.payload, t) for t, c in per_tile])
        report = [{"type": c.type.name, "level": c.level, "tile": t, "bytes": len(c.payload),
                   "estimated_bits": c.estimated_bits} for t, c in per_tile]
        return data, report

    # ----- decoding ---------------------------------------------------------------------------
    def latent_estimates(self, data: bytes) -> list[float | None]:
        """Per chunk of ``data``: the model's estimate (bits) for latent chunks, None for pixel
        chunks (those need the whole decoder). Needs the stream's weights."""
        parsed = read_stream(data)
        check_weights(parsed.header, self.fingerprint)
        boxes = _header_tiles(parsed.header)
        out: list[float | None] = []
        for chunk in parsed.chunks:
            if chunk.type not in (ChunkType.U, ChunkType.Z):
                out.append(None)
                continue
            r0, r1, c0, c1 = boxes[chunk.tile]
            hp, wp = self.model.padded_size(r1 - r0, c1 - c0)
            out.append(latent_bits(chunk.payload, self.model.latent_shape(1, hp, wp, chunk.level)))
        return out

    def decode(self, data: bytes, levels: int | None = None) -> np.ndarray:
        """The image at ``levels`` (default: the highest whole level in the stream)."""
        last = None
        for step in self.decode_progressive(data, levels, only_last=True):
            last = step
        assert last is not None
        return last.image

    def decode_progressive(self, data: bytes, levels: int | None = None, only_last: bool = False,
                           progress: bool = False) -> Iterator[LevelImage]:
        """Yield the image of every whole level (1, 2, ...) up to ``levels``, with the bytes used."""
        parsed = read_stream(data)
        hd = parsed.header
        check_weights(hd, self.fingerprint)
        if hd.levels != self.K:
            raise ValueError(f"stream has {hd.levels} model levels, these weights have {self.K}")
        if not parsed.chunks:
            raise ValueError("the stream holds no level: nothing to decode" + (" (file truncated)" if parsed.truncated else ""))
        boxes = _header_tiles(hd)
        by_tile: list[dict[tuple[ChunkType, int], bytes]] = [{} for _ in boxes]
        end_of_level = level_ends(parsed)
        for chunk in parsed.chunks:
            by_tile[chunk.tile][(chunk.type, chunk.level)] = chunk.payload
        decoders = []
        for (r0, r1, c0, c1), chunks in zip(boxes, by_tile):
            hp, wp = self.model.padded_size(r1 - r0, c1 - c0)
            down = self.model.image_down

            def lat(level: int, hp: int = hp, wp: int = wp) -> tuple[int, ...]:
                return self.model.latent_shape(1, hp, wp, level)

            def pixel_shape(j: int, hp: int = hp, wp: int = wp) -> tuple[int, ...]:
                return (1, self.model.image_channels[j - 1], hp // down[j - 1], wp // down[j - 1])

            decoders.append(self.coder.decoder(chunks, lat, pixel_shape, hd.quality))
        available = min(d.max_level() for d in decoders)
        if available == 0:
            raise ValueError("the stream is truncated before its first whole level")
        top = available if levels is None else levels
        if not 1 <= top <= available:
            raise ValueError(f"level {top} is not in this stream (it holds levels 1..{available})")
        start = top if only_last else 1
        for level in range(start, top + 1):
            canvas = np.zeros((hd.height, hd.width, 3), dtype=np.uint8)
            for (r0, r1, c0, c1), dec in zip(tqdm(boxes, desc=f"level {level}", unit="tile",
                                                  disable=not progress or len(boxes) == 1), decoders):
                x = dec.render(level)
                canvas[r0:r1, c0:c1] = x[0, :, :r1 - r0, :c1 - c0].permute(1, 2, 0).numpy()
            img = canvas.mean(axis=2).round().astype(np.uint8) if hd.channels == 1 else canvas
            yield LevelImage(level, self.level_label(level, bool(hd.flags & HeaderFlags.Y_CHUNKS)), img,
                             end_of_level.get(level, HEADER_SIZE))

    def level_label(self, level: int, with_y: bool) -> str:
        if level == self.K + 2:
            return "lossless"
        return ("CR" if with_y and level > 1 else "RS") + str(level)
