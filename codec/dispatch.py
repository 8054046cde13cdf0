"""Which codec reads or writes a stream: format version 2 is the rate-distortion model's
and 3 are the rate-distortion model's (:class:`codec.rd_api.RDCodec`, the default; 3 may end in
lossless X chunks), version 1 the ELBO model's (:class:`codec.api.Codec`, ``--with-y``). Both are
imported lazily (they import torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .bitstream import ELBO_VERSION, read_header


def open_codec(kind: str, weights: str | Path | None = None, device: str = "cpu",
               lossless_weights: str | Path | None = None) -> Any:
    """``kind`` "rd" (the default codec) or "elbo"; ``weights`` (and the RD codec's lossless
    head, ``lossless_weights``) default to the shipped ones."""
    if kind == "rd":
        from .rd_api import RDCodec
        extra = {"lossless_weights": lossless_weights} if lossless_weights else {}
        return RDCodec(weights, device, **extra) if weights else RDCodec(device=device, **extra)
    if kind == "elbo":
        from .api import Codec
        return Codec(weights, device) if weights else Codec(device=device)
    raise ValueError(f"unknown codec kind {kind!r}: rd or elbo")


def codec_for_stream(data: bytes, weights: str | Path | None = None,
                     lossless_weights: str | Path | None = None) -> Any:
    """The codec that decodes ``data`` (by its header's format version)."""
    return open_codec("elbo" if read_header(data).version == ELBO_VERSION else "rd", weights,
                      lossless_weights=lossless_weights)
