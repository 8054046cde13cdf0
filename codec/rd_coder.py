"""Coding one tile with the rate-distortion ssVAE (:mod:`models.rd`): one chunk payload per level,
written and read by the model's own top-down pass (:meth:`models.rd.RDSSVAE.top_down`).

Level k's latent is coded element by element under its conditional prior: (mu, sigma) come from a
float64 copy of the model, on the CPU, which computes everything a later prior depends on (so
neither the thread count nor a CPU kind whose float32 kernels round differently moves a table),
snapped by :func:`codec.quantize.snap_prior`; the symbol is ``round(latent - mu_hat)`` under a
zero-mean quantized Gaussian of the table scale (format version 6: that scale's integer table,
:mod:`codec.scale_tables`, the symbols grouped by scale within each coding pass), and both sides
take ``z_hat = mu_hat + symbol``. From version 6 the transitions between levels run as
sub-pixel convolutions (``top_down(subpixel_transitions=True)``), on both sides.
The encoder's posteriors run on one thread (:func:`single_thread`), so the
file's bytes do not depend on the thread count; renders, which no prior reads, run in float32 on
every thread (or a GPU: ``device``), except the final render a lossless chunk is coded against,
which both sides draw from the float64 state in exact integer arithmetic
(:mod:`models.exact_render`).

Payload of a level: ``[checksum of the int32 symbols][range-coded symbols]``, the checksum a
CRC-16 (``binascii.crc_hqx``, 2 bytes) from format version 5 and a CRC-32 (4 bytes) before
(:func:`symbol_check_size`); a wrong checksum is a :class:`DesyncError`, never a silent wrong
image. A level with a spatial context (``RDConfig.context``) codes its passes in one payload, in
order (:func:`models.rd.coding_passes`: the checkerboard's anchors, then the rest; or the four
2x2 phases); the checksum covers every part in that order.
"""
from __future__ import annotations

import binascii
import copy
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..models.rd import RDSSVAE, Quantizer, upsample

from .bitstream import COMPACT_VERSION, FORMAT_VERSION, TABLED_VERSION, BitstreamError
from .entropy import MAX_SYMBOL, ChunkDecoder, ChunkEncoder, EntropyDecodeError
from .quantize import SCALE_TABLE, snap_prior


class DesyncError(BitstreamError):
    """The decoder did not rebuild the encoder's probabilities (checksum mismatch)."""


@contextmanager
def single_thread() -> Iterator[None]:
    """Thread-count-independent arithmetic: PyTorch's CPU kernels choose different reduction
    orders for different thread counts, so what decides the file's bytes runs on one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def symbol_check_size(version: int) -> int:
    """Bytes of the symbol checksum that opens a level's payload in a stream of ``version``."""
    return 2 if version >= COMPACT_VERSION else 4


def _checksum(size: int, *parts: np.ndarray) -> bytes:
    """The ``size``-byte checksum (CRC-16 or CRC-32, little-endian) of int32 symbols, the parts one
    after the other."""
    crc = 0
    for p in parts:
        data = np.ascontiguousarray(p, dtype="<i4").tobytes()
        crc = binascii.crc_hqx(data, crc) if size == 2 else zlib.crc32(data, crc)
    return crc.to_bytes(size, "little")


def to_model_input(pixels: Tensor) -> Tensor:
    """uint8 (1, 3, H, W) -> float in [-1/2, 1/2], as the model is trained."""
    return pixels.float() / 255.0 - 0.5


def to_pixels(render: Tensor, factor: int, size: tuple[int, int]) -> Tensor:
    """A level's render -> uint8 (3, h, w) at the tile's true size: upsampled by ``factor`` with
    the model's upsampler, clamped and rounded."""
    img = upsample(render, factor)[0, :, :size[0], :size[1]]
    return torch.round((img + 0.5).clamp(0.0, 1.0) * 255.0).to(torch.uint8)


class LevelRender(NamedTuple):
    """A decoded level: its image uint8 (3, h, w) and, when drawn with the exact path, the
    render head's features (:func:`models.exact_render.exact_render`), which the lossless head
    reads; otherwise None."""

    pixels: Tensor
    features: list[Tensor] | None


class RDTileCoder:
    """Encode and decode one padded tile with an :class:`~models.rd.RDSSVAE`."""

    def __init__(self, model: RDSSVAE, device: str = "cpu") -> None:
        """``device``: where the float32 networks run (encoder trunk, posteriors, renders); the
        float64 copy that every prior depends on stays on the CPU, so streams decode anywhere."""
        self.precise = copy.deepcopy(model).double().cpu().eval()  # the priors' path (top_down's ``precise``)
        self.model = model.to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, pixels: Tensor, q: float, levels: int, final_render: bool = False,
               version: int = FORMAT_VERSION) -> tuple[list[tuple[bytes, float]], LevelRender | None]:
        """Padded uint8 (1, 3, H, W) -> one (payload, estimated bits) per level 1..``levels`` and,
        with ``final_render``, the last level's render as the decoder's exact path draws it
        (uint8 (3, H, W), padded, with its features: what the lossless head codes x against).
        ``version``: the format version whose payload layout to write."""
        encoders: dict[int, ChunkEncoder] = {}
        symbols_of: dict[int, list[np.ndarray]] = {}
        bits_of: dict[int, float] = {}

        def quantize(k: int, latent: Tensor | None, mu: Tensor, sigma: Tensor,
                     where: Tensor | None = None) -> tuple[Tensor, None]:
            assert latent is not None
            mu_hat, idx = snap_prior(mu, sigma)
            sym = torch.round(latent.double() - mu_hat).clamp(-MAX_SYMBOL, MAX_SYMBOL)
            s = sym.to(torch.int32).numpy()
            if where is not None:
                m = where.expand_as(mu).numpy()
                s, idx = s[m], idx[m]
            std = SCALE_TABLE[idx]
            enc = encoders.setdefault(k, ChunkEncoder())
            if version >= TABLED_VERSION:
                enc.tabled(s, idx)
            else:
                enc.gaussian(s, std)
            symbols_of.setdefault(k, []).append(s)
            bits_of[k] = bits_of.get(k, 0.0) + model_bits(s, std)
            return mu_hat + sym, None

        q_t = torch.tensor([float(q)])
        render = None
        for o in self.model.top_down(q_t, quantize, to_model_input(pixels.to(self.device)), levels=levels,
                                     render=lambda k: final_render and k == levels - 1, deterministic=single_thread,
                                     precise=self.precise, precise_render=True,
                                     subpixel_transitions=version >= TABLED_VERSION):
            if o.render is not None:
                render = LevelRender(to_pixels(o.render, self.model.config.render_strides[o.k], tuple(pixels.shape[-2:])),
                                     o.features)
        out = []
        size = symbol_check_size(version)
        for k in sorted(encoders):
            payload = _checksum(size, *symbols_of[k]) + encoders[k].finish()
            out.append((payload, bits_of[k] + 8 * size))
        return out, render

    @torch.no_grad()
    def decode(self, payloads: list[bytes], q: float, padded: tuple[int, int], size: tuple[int, int],
               render_levels: set[int] | None = None, precise_render: bool = False,
               version: int = FORMAT_VERSION) -> Iterator[tuple[int, LevelRender]]:
        """Yield (level, its render) for every level in ``render_levels`` (1-based; default: the
        last) among the ``len(payloads)`` levels present. ``precise_render``: draw the renders
        with the exact path (as ``encode``'s ``final_render``), features included. ``version``:
        the stream's format version (its payload layout)."""
        n = len(payloads)
        want = render_levels or {n}
        cfg = self.model.config

        quantize = self._reading_quantizer(payloads, version)

        q_t = torch.tensor([float(q)])
        for o in self.model.top_down(q_t, quantize, None, size=padded, levels=n,
                                     render=lambda k: (k + 1) in want, deterministic=single_thread, precise=self.precise,
                                     precise_render=precise_render, subpixel_transitions=version >= TABLED_VERSION):
            if (o.k + 1) in want:
                assert o.render is not None
                yield o.k + 1, LevelRender(to_pixels(o.render, cfg.render_strides[o.k], size).cpu(), o.features)


    @torch.no_grad()
    def estimate(self, payloads: list[bytes], q: float, padded: tuple[int, int],
                 version: int = FORMAT_VERSION) -> list[float]:
        """Per level: the model's information content (bits) of the decoded symbols, plus the
        checksum's bits, without rendering."""
        out = [8.0 * symbol_check_size(version)] * len(payloads)

        def count(k: int, sym: np.ndarray, std: np.ndarray) -> None:
            out[k] += model_bits(sym, std)

        quantize = self._reading_quantizer(payloads, version, count)
        for _ in self.model.top_down(torch.tensor([float(q)]), quantize, None, size=padded, levels=len(payloads),
                                     render=False, deterministic=single_thread, precise=self.precise,
                                     subpixel_transitions=version >= TABLED_VERSION):
            pass
        return out

    def _reading_quantizer(self, payloads: list[bytes], version: int,
                           seen: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> Quantizer:
        """The decoder's quantizer: each level's symbols read from its payload (all the coding
        passes of a context level from one :class:`LevelReader`), ``z_hat = mu_hat + symbol``; ``seen(k,
        symbols, stds)`` is told of every part read."""
        readers: dict[int, LevelReader] = {}

        def quantize(k: int, latent: Tensor | None, mu: Tensor, sigma: Tensor,
                     where: Tensor | None = None) -> tuple[Tensor, None]:
            mu_hat, idx = snap_prior(mu, sigma)
            if k not in readers:
                readers[k] = LevelReader(payloads[k], f"level {k + 1}", self.model.levels[k].context_passes,
                                         symbol_check_size(version), version >= TABLED_VERSION)
            reader = readers[k]
            if where is None:
                sym = reader.read(idx)
                if seen is not None:
                    seen(k, sym, SCALE_TABLE[idx])
            else:
                m = where.expand_as(mu).numpy()
                part = reader.read(idx[m])
                if seen is not None:
                    seen(k, part, SCALE_TABLE[idx[m]])
                sym = np.zeros(idx.shape, dtype=np.int32)
                sym[m] = part
            return mu_hat + torch.from_numpy(sym).double(), None

        return quantize


class LevelReader:
    """Reads one level's payload: ``[checksum][range-coded symbols]`` in ``parts`` parts (a
    context level: one per coding pass), checked against the checksum (of
    ``check_size`` bytes) after the last one; ``tabled``: the symbols are coded under per-scale
    tables (format version 6, :meth:`ChunkDecoder.tabled`), else a quantized Gaussian each."""

    def __init__(self, payload: bytes, what: str, parts: int = 1, check_size: int = 2, tabled: bool = True) -> None:
        if len(payload) < check_size:
            raise DesyncError(f"{what}: payload too short")
        self._check = bytes(payload[:check_size])
        self._what = what
        try:
            self._dec = ChunkDecoder(payload[check_size:])
        except EntropyDecodeError as e:
            raise DesyncError(f"{what}: {e}") from None
        self._expected = parts
        self._tabled = tabled
        self._parts: list[np.ndarray] = []

    def read(self, idx: np.ndarray) -> np.ndarray:
        """The next int32 symbols, one per entry of ``idx`` (the snapped scale indices); after
        the last part, :class:`DesyncError` unless all of them match the payload's CRC."""
        try:
            sym = self._dec.tabled(idx) if self._tabled else self._dec.gaussian(idx.shape, SCALE_TABLE[idx])
        except EntropyDecodeError as e:
            raise DesyncError(f"{self._what}: {e}") from None
        self._parts.append(sym)
        if len(self._parts) == self._expected and _checksum(len(self._check), *self._parts) != self._check:
            raise DesyncError(f"{self._what}: decoded symbols fail their checksum (corrupt or desynchronised stream)")
        return sym


def model_bits(symbols: np.ndarray, std: np.ndarray) -> float:
    """Information content (bits) of integer symbols under zero-mean quantized Gaussians."""
    s = torch.from_numpy(symbols).double()
    sd = torch.from_numpy(np.broadcast_to(std, symbols.shape).copy())
    p = torch.special.ndtr((s + 0.5) / sd) - torch.special.ndtr((s - 0.5) / sd)
    return float(-torch.log2(p.clamp_min(2.0 ** -24)).sum())
