"""Entropy coding: the only module that imports ``constriction`` (Bamler 2022, arXiv:2201.12857).

A range coder (first in, first out) writes one chunk's symbols in the order the decoder reads
them, so tables can be built and consumed slice by slice. Two model families are used:

* quantized Gaussians with mean 0 and a standard deviation taken from a fixed table, for the
  integer latent symbols (the table index is data in the chunk, so both sides build bit-identical
  models without any floating-point network output in the loop);
* quantized Laplaces on 0..255 with a mean and a scale per symbol, for the lossless head's
  sub-pixels, and on -255..255 for its near-lossless quantized residuals (the caller computes
  the mean and scale from numbers snapped to grids, so both sides pass bit-identical ones).
"""
from __future__ import annotations

import numpy as np
import constriction

#: largest latent symbol magnitude; the encoder clips (and reconstructs from the clipped value)
MAX_SYMBOL = 1023


def _gaussian_family() -> "constriction.stream.model.QuantizedGaussian":
    return constriction.stream.model.QuantizedGaussian(-MAX_SYMBOL, MAX_SYMBOL)


def _laplace_family() -> "constriction.stream.model.QuantizedLaplace":
    return constriction.stream.model.QuantizedLaplace(0, 255)


def _residual_family() -> "constriction.stream.model.QuantizedLaplace":
    return constriction.stream.model.QuantizedLaplace(-255, 255)


class EntropyDecodeError(ValueError):
    """The entropy-coded payload cannot be decoded under the model (corrupt data)."""


class ChunkEncoder:
    """Accumulates the symbols of one chunk."""

    def __init__(self) -> None:
        self._enc = constriction.stream.queue.RangeEncoder()

    def gaussian(self, symbols: np.ndarray, stds: np.ndarray) -> None:
        """Integer symbols in [-MAX_SYMBOL, MAX_SYMBOL] under N(0, stds^2) quantized to integers."""
        s = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if s.size:
            std = np.ascontiguousarray(np.broadcast_to(stds, symbols.shape), dtype=np.float64).ravel()
            self._enc.encode(s, _gaussian_family(), np.zeros_like(std), std)

    def laplace(self, symbols: np.ndarray, means: np.ndarray, scales: np.ndarray) -> None:
        """8-bit symbols, each under a Laplace(mean, scale) quantized to 0..255."""
        s = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if s.size:
            self._enc.encode(s, _laplace_family(), np.ascontiguousarray(means, dtype=np.float64).ravel(),
                             np.ascontiguousarray(scales, dtype=np.float64).ravel())

    def residual_laplace(self, symbols: np.ndarray, means: np.ndarray, scales: np.ndarray) -> None:
        """Integer symbols in -255..255, each under a Laplace(mean, scale) quantized to integers
        (the near-lossless head's quantized residuals)."""
        s = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if s.size:
            self._enc.encode(s, _residual_family(), np.ascontiguousarray(means, dtype=np.float64).ravel(),
                             np.ascontiguousarray(scales, dtype=np.float64).ravel())

    def finish(self) -> bytes:
        return self._enc.get_compressed().astype("<u4").tobytes()


class ChunkDecoder:
    """Reads back what :class:`ChunkEncoder` wrote, in the same order."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise EntropyDecodeError("entropy-coded payload is not a whole number of 32-bit words")
        self._dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))

    def gaussian(self, shape: tuple[int, ...], stds: np.ndarray) -> np.ndarray:
        n = int(np.prod(shape))
        if n == 0:
            return np.zeros(shape, dtype=np.int32)
        std = np.ascontiguousarray(np.broadcast_to(stds, shape), dtype=np.float64).ravel()
        try:
            out = self._dec.decode(_gaussian_family(), np.zeros_like(std), std)
        except Exception as e:  # constriction signals invalid data with AssertionError
            raise EntropyDecodeError(f"invalid entropy-coded data ({e})") from None
        return np.asarray(out, dtype=np.int32).reshape(shape)

    def laplace(self, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
        return self._laplace(_laplace_family(), means, scales)

    def residual_laplace(self, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
        return self._laplace(_residual_family(), means, scales)

    def _laplace(self, family: "constriction.stream.model.QuantizedLaplace", means: np.ndarray,
                 scales: np.ndarray) -> np.ndarray:
        m = np.ascontiguousarray(means, dtype=np.float64)
        if m.size == 0:
            return np.zeros(m.shape, dtype=np.int32)
        try:
            out = self._dec.decode(family, m.ravel(), np.ascontiguousarray(scales, dtype=np.float64).ravel())
        except Exception as e:  # constriction signals invalid data with AssertionError
            raise EntropyDecodeError(f"invalid entropy-coded data ({e})") from None
        return np.asarray(out, dtype=np.int32).reshape(m.shape)
