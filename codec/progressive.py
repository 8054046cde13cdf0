"""Progressive coding of one tile: which latent or image is coded under which distribution, in
which order, and how a decoder renders an image from any whole prefix of levels.

Levels (design doc §3.2): level 1 is ``u`` (render RS1), level k+1 adds ``z_k`` (RS(k+1)) and,
with ``with_y``, the lossless ``y_k`` before it (so z_k's prior is conditioned on the true y_k:
conditional reconstruction); level K+2 is the lossless ``x``. Whatever a level does not carry is
taken from the model: the mean of a pixel mixture, the mean of a conditional prior.

Encoder and decoder run the same walk (:meth:`TileCoder.walk`) and differ only in where each
latent and image comes from. Every quantity both sides need is computed single-threaded with the
last layer in float64 and snapped to a grid (:mod:`codec.quantize`), so the decoder rebuilds the
encoder's probability tables bit for bit; a CRC of the decoded symbols detects a desynchronised
decode instead of rendering it.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..models.distributions import DiscretizedLogisticMixture
from ..models.ssvae import SSVAE

from .bitstream import BitstreamError, ChunkType
from .entropy import ChunkDecoder, ChunkEncoder, EntropyDecodeError, gaussian_bits
from .quantize import (STD_TABLE, choose_std_indices, dequantize, quantize, quantize_posterior,
                       snap_gaussian, snap_mixture_params, step_for_quality)

PIXEL_SLICE_ROWS = 16  # rows of categorical tables built at a time (bounded memory, §3.5)
TABLE_DTYPE = torch.float32


class DesyncError(BitstreamError):
    """The decoder did not rebuild the encoder's probabilities (checksum mismatch)."""


@dataclass(frozen=True)
class CodingOptions:
    """What a stream carries. ``levels`` counts latent levels (1..K+1); ``lossless`` adds x."""

    levels: int
    quality: float
    with_y: bool = False
    lossless: bool = False


@dataclass
class CodedChunk:
    type: ChunkType
    level: int
    payload: bytes
    estimated_bits: float   # information content under the coding model (honest accounting)

    @property
    def progressive_level(self) -> int:
        return self.level + 1


@contextmanager
def single_thread() -> Iterator[None]:
    """Thread-count-independent arithmetic: PyTorch's CPU kernels choose different reduction
    orders for different thread counts, so everything the decoder must reproduce runs on one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


#: (kind, level k, snapped prior mean, prior std, the decoder's current y_k or None for u)
#: -> the dequantized latent, or None if the stream does not carry it
LatentSource = Callable[[ChunkType, int, Tensor, "Tensor | float", "Tensor | None"], "Tensor | None"]
#: (index j of y_j, a function that builds p(y_j | ...)) -> the true y_j if this stream codes it
PixelSource = Callable[[int, Callable[[], DiscretizedLogisticMixture]], "Tensor | None"]


def _lazy(fn: Callable[[], DiscretizedLogisticMixture]) -> Callable[[], DiscretizedLogisticMixture]:
    """Build a mixture at most once, and only if someone asks for it."""
    box: list[DiscretizedLogisticMixture] = []

    def get() -> DiscretizedLogisticMixture:
        if not box:
            box.append(fn())
        return box[0]

    return get


class TileCoder:
    """Codes one (padded) tile with a trained ssVAE."""

    def __init__(self, model: SSVAE, posterior_model: SSVAE | None = None) -> None:
        """``posterior_model``: an optional copy of the model on another device (CUDA) that runs
        the encoder-only posterior networks; everything a decoder repeats stays on the CPU."""
        self.model = model
        self.posterior_model = posterior_model or model
        self.K = model.levels
        self.cfg = model.config

    # ----- quantities both sides compute identically ------------------------------------------
    def u_from_base(self, v_hat: Tensor) -> Tensor:
        """u = f(v) (the flow's forward map; identity for non-flow priors)."""
        if self.cfg.prior == "realnvp":
            return self.model.prior_u(v_hat.float())[0]
        return v_hat.float()

    def prior(self, k: int, y: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        """Snapped (mu_hat, sigma_hat) of p(z_k | y_k, z_{k-1})."""
        return snap_gaussian(self.model.p_z_params(k, y, z_prev, float64=True), self.cfg.logvar_clamp)

    def mixture(self, k: int, y_prev: Tensor | None, z: Tensor) -> DiscretizedLogisticMixture:
        """p(y_1 | u) for k = 0, p(y_{k+1} | y_k, z_k) else; snapped float64 parameters."""
        params, base = self.model.p_y_params(k, y_prev, z, float64=True)
        return self.model.mixture(k, snap_mixture_params(params, self.model.image_channels[k], self.cfg.n_mix), base)

    # ----- the walk shared by encoder and decoder ---------------------------------------------
    @torch.no_grad()
    def walk(self, level: int, latent: LatentSource, pixels: PixelSource, render: bool,
             cache: dict[tuple[str, ...], object] | None = None) -> Tensor | None:
        """Top-down pass using the chunks of progressive levels <= ``level``; returns the
        rendered (padded) x when ``render``.

        ``cache`` (decoder) keeps results keyed by the path taken so far (which y_k were true or
        estimated, which z_k coded or prior means): rendering levels 1, 2, ... in turn then
        recomputes only what a level changes."""

        def memo(key: tuple[str, ...], fn: Callable[[], object]) -> object:
            if cache is None:
                return fn()
            if key not in cache:
                cache[key] = fn()
            return cache[key]

        with single_thread():
            v_hat = latent(ChunkType.U, 0, torch.zeros(()), 1.0, None)
            assert v_hat is not None
            path: tuple[str, ...] = ("u",)
            u = memo(path + ("f(v)",), lambda: self.u_from_base(v_hat))
            get_mix = _lazy(lambda: self.mixture(0, None, u))
            y = pixels(1, get_mix) if level >= 2 else None
            if y is None:
                if not render and level < 2:
                    return None
                y = memo(path + ("mean y1",), lambda: get_mix().mean())
                path += ("y1 estimated",)
            else:
                path += ("y1 true",)
            z_prev: Tensor = u  # type: ignore[assignment]
            for k in range(1, self.K + 1):
                if not render and level < k + 1:
                    return None
                mu, sig = memo(path + (f"prior z{k}",), lambda k=k, y=y, zp=z_prev: self.prior(k, y, zp))
                z = latent(ChunkType.Z, k, mu, sig, y) if level >= k + 1 else None
                if z is None:
                    z, path = mu, path + (f"z{k} prior mean",)
                else:
                    path += (f"z{k} coded",)
                get_mix = _lazy(lambda k=k, y=y, z=z: self.mixture(k, y, z))
                nxt = pixels(k + 1, get_mix) if level >= k + 2 else None
                if nxt is None and (render or level >= k + 2):
                    nxt = memo(path + (f"mean y{k + 1}",), lambda g=get_mix: g().mean())
                    path += (f"y{k + 1} estimated",)
                else:
                    path += (f"y{k + 1} true",)
                y, z_prev = nxt, z  # type: ignore[assignment]
            return y if render else None

    # ----- encoder ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, xp: Tensor, opts: CodingOptions, progress: bool = False) -> list[CodedChunk]:
        """Chunks of one padded tile (1, 3, H, W) uint8, in decoding order."""
        K = self.K
        if not 1 <= opts.levels <= K + 1:
            raise ValueError(f"levels must be in 1..{K + 1} for this model (K = {K})")
        if opts.lossless and opts.levels != K + 1:
            raise ValueError("--lossless needs every level")
        step = step_for_quality(opts.quality)
        model = self.model
        ys = model.pyramid(xp)
        # Posteriors are encoder-only, but on the CPU they also run on one thread: with more, a
        # latent near a rounding boundary can land in the other bin (measured: kodim04 at q=4
        # came out 4 bytes shorter on 2 threads), and the same image should give the same file
        # whatever machine encodes it. A GPU (--device cuda) gives its own bytes.
        pm = self.posterior_model
        dev = next(pm.parameters()).device
        with single_thread() if dev.type == "cpu" else nullcontext():
            ys_dev = [y.to(dev) for y in ys]
            mu_u = pm.q_u(ys_dev[0]).mu
            v = (pm.prior_u.inverse(mu_u)[0] if self.cfg.prior == "realnvp" else mu_u).cpu()
            q_z = [pm.q_z(k, ys_dev[k]) for k in range(1, K + 1)]
            mu_z = [q.mu.cpu() for q in q_z]
            std_z = [q.std.cpu() for q in q_z]
        chunks: list[CodedChunk] = []
        n_chunks = opts.levels + (opts.levels - 1 if opts.with_y else 0) + (1 if opts.lossless else 0)
        bar = tqdm(total=n_chunks, desc="encode", unit="chunk", disable=not progress, leave=False)

        def latent(kind: ChunkType, k: int, mean: Tensor, std: Tensor | float, y_state: Tensor | None) -> Tensor:
            if kind == ChunkType.U:   # base space of the flow: N(0, I), no posterior width there
                sym = quantize(v, mean, std, step)
            else:
                assert isinstance(std, Tensor)
                sym = quantize_posterior(mu_z[k - 1], std_z[k - 1], mean, std, step)
            payload, bits = encode_latent(sym)
            chunks.append(CodedChunk(kind, k, payload, bits))
            bar.update(1)
            return dequantize(sym, mean, std, step)

        def pixels(j: int, get_mix: Callable[[], DiscretizedLogisticMixture]) -> Tensor | None:
            is_x = j == K + 1
            if (is_x and not opts.lossless) or (not is_x and not opts.with_y):
                return None
            img = ys[j - 1]
            payload, bits = encode_pixels(img, get_mix())
            chunks.append(CodedChunk(ChunkType.X if is_x else ChunkType.Y, j, payload, bits))
            bar.update(1)
            return img

        top = opts.levels + (1 if opts.lossless else 0)
        self.walk(top, latent, pixels, render=False)
        bar.close()
        return chunks

    # ----- decoder ----------------------------------------------------------------------------
    def decoder(self, chunks: dict[tuple[ChunkType, int], bytes], latent_shape: Callable[[int], tuple[int, ...]],
                pixel_shape: Callable[[int], tuple[int, ...]], quality: float) -> "TileDecoder":
        return TileDecoder(self, chunks, latent_shape, pixel_shape, step_for_quality(quality))


class TileDecoder:
    """Renders one tile at any level its chunks allow; decoded symbols are cached per chunk."""

    def __init__(self, coder: TileCoder, chunks: dict[tuple[ChunkType, int], bytes],
                 latent_shape: Callable[[int], tuple[int, ...]], pixel_shape: Callable[[int], tuple[int, ...]],
                 step: float) -> None:
        self.coder, self.chunks, self.step = coder, chunks, step
        self.latent_shape, self.pixel_shape = latent_shape, pixel_shape
        self._symbols: dict[tuple[ChunkType, int], np.ndarray] = {}
        self._pixels: dict[int, Tensor] = {}
        self._cache: dict[tuple[str, ...], object] = {}

    def max_level(self) -> int:
        lv = 1 if (ChunkType.U, 0) in self.chunks else 0
        while (ChunkType.Z, lv) in self.chunks:
            lv += 1
        if lv == self.coder.K + 1 and (ChunkType.X, self.coder.K + 1) in self.chunks:
            lv += 1
        return lv

    def render(self, level: int) -> Tensor:
        K = self.coder.K

        def latent(kind: ChunkType, k: int, mean: Tensor, std: Tensor | float, _y: Tensor | None) -> Tensor | None:
            key = (kind, k)
            if key not in self.chunks:
                return None
            if key not in self._symbols:
                self._symbols[key] = decode_latent(self.chunks[key], self.latent_shape(k), f"{kind.name} level {k}")
            return dequantize(self._symbols[key], mean, std, self.step)

        def pixels(j: int, get_mix: Callable[[], DiscretizedLogisticMixture]) -> Tensor | None:
            key = (ChunkType.X if j == K + 1 else ChunkType.Y, j)
            if key not in self.chunks:
                return None
            if j not in self._pixels:
                self._pixels[j] = decode_pixels(self.chunks[key], get_mix(), self.pixel_shape(j),
                                                f"{key[0].name} level {j}")
            return self._pixels[j]

        out = self.coder.walk(level, latent, pixels, render=True, cache=self._cache)
        assert out is not None
        return out


# ----- chunk payloads ---------------------------------------------------------------------------
def _crc(a: np.ndarray | Tensor) -> int:
    arr = a.numpy() if isinstance(a, Tensor) else a
    return zlib.crc32(np.ascontiguousarray(arr).tobytes())


def encode_latent(symbols: np.ndarray) -> tuple[bytes, float]:
    """Payload ``[C table indices][crc32 of the symbols][range-coded symbols]`` and the model's
    information content of the symbols in bits."""
    idx = choose_std_indices(symbols)
    enc = ChunkEncoder()
    bits = 0.0
    for c in range(symbols.shape[1]):
        if idx[c]:
            enc.gaussian(symbols[:, c], np.full(symbols[:, c].shape, STD_TABLE[idx[c]]))
            bits += gaussian_bits(symbols[:, c], float(STD_TABLE[idx[c]]))
    head = idx.tobytes() + struct.pack("<I", _crc(symbols.astype("<i4")))
    return head + enc.finish(), bits + 8 * len(head)


def latent_bits(payload: bytes, shape: tuple[int, ...]) -> float:
    """The model's information content (bits) of a latent chunk's symbols: what ``info``
    reports beside the chunk's actual size."""
    sym = decode_latent(payload, shape, "latent chunk")
    idx = np.frombuffer(payload[:shape[1]], dtype=np.uint8)
    bits = 8.0 * (shape[1] + 4)
    for c in range(shape[1]):
        if idx[c]:
            bits += gaussian_bits(sym[:, c], float(STD_TABLE[idx[c]]))
    return bits


def decode_latent(payload: bytes, shape: tuple[int, ...], what: str) -> np.ndarray:
    c = shape[1]
    if len(payload) < c + 4:
        raise DesyncError(f"{what}: payload too short")
    idx = np.frombuffer(payload[:c], dtype=np.uint8)
    (crc,) = struct.unpack("<I", payload[c:c + 4])
    try:
        dec = ChunkDecoder(payload[c + 4:])
        out = np.zeros(shape, dtype=np.int32)
        for i in range(c):
            if idx[i]:
                sub = out[:, i]
                out[:, i] = dec.gaussian(sub.shape, np.full(sub.shape, STD_TABLE[idx[i]]))
    except EntropyDecodeError as e:
        raise DesyncError(f"{what}: {e}") from None
    if _crc(out.astype("<i4")) != crc:
        raise DesyncError(f"{what}: decoded symbols fail their checksum (corrupt or desynchronised stream)")
    return out


def encode_pixels(img: Tensor, mix: DiscretizedLogisticMixture) -> tuple[bytes, float]:
    """Lossless: R under its marginal, G given R, B given R and G, in slices of rows (§3.2)."""
    enc = ChunkEncoder()
    bits = 0.0
    h = img.shape[-2]
    for r0 in range(0, h, PIXEL_SLICE_ROWS):
        sub = mix.rows(r0, min(h, r0 + PIXEL_SLICE_ROWS))
        block = img[:, :, r0:r0 + PIXEL_SLICE_ROWS]
        for c in range(img.shape[1]):
            probs = sub.probability_table(c, block[:, :c] if c else None, TABLE_DTYPE).reshape(-1, 256).numpy()
            sym = block[:, c].reshape(-1).numpy()
            enc.categorical(sym, probs)
            bits -= float(np.log2(np.maximum(probs[np.arange(len(sym)), sym], 2.0 ** -24)).sum())
    return struct.pack("<I", _crc(img)) + enc.finish(), bits + 32


def decode_pixels(payload: bytes, mix: DiscretizedLogisticMixture, shape: tuple[int, ...], what: str) -> Tensor:
    if len(payload) < 4:
        raise DesyncError(f"{what}: payload too short")
    (crc,) = struct.unpack("<I", payload[:4])
    img = torch.zeros(shape, dtype=torch.uint8)
    h = shape[-2]
    try:
        dec = ChunkDecoder(payload[4:])
        for r0 in range(0, h, PIXEL_SLICE_ROWS):
            r1 = min(h, r0 + PIXEL_SLICE_ROWS)
            sub = mix.rows(r0, r1)
            for c in range(shape[1]):
                probs = sub.probability_table(c, img[:, :c, r0:r1] if c else None, TABLE_DTYPE).reshape(-1, 256).numpy()
                img[:, c, r0:r1] = torch.from_numpy(dec.categorical(probs).astype(np.uint8)).view(shape[0], r1 - r0, shape[-1])
    except EntropyDecodeError as e:
        raise DesyncError(f"{what}: {e}") from None
    if _crc(img) != crc:
        raise DesyncError(f"{what}: decoded pixels fail their checksum (corrupt or desynchronised stream)")
    return img
