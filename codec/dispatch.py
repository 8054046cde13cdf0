"""Which codec reads or writes a stream: format version 2 is the rate-distortion model's
(:class:`codec.rd_api.RDCodec`, the default), version 1 the ELBO model's (:class:`codec.api.Codec`,
``--with-y`` / ``--lossless``). Both are imported lazily (they import torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .bitstream import ELBO_VERSION, read_header


def open_codec(kind: str, weights: str | Path | None = None, device: str = "cpu") -> Any:
    """``kind`` "rd" (the default lossy codec) or "elbo"; ``weights`` default to the shipped ones."""
    if kind == "rd":
        from .rd_api import RDCodec
        return RDCodec(weights, device) if weights else RDCodec(device=device)
    if kind == "elbo":
        from .api import Codec
        return Codec(weights, device) if weights else Codec(device=device)
    raise ValueError(f"unknown codec kind {kind!r}: rd or elbo")


def codec_for_stream(data: bytes, weights: str | Path | None = None) -> Any:
    """The codec that decodes ``data`` (by its header's format version)."""
    return open_codec("elbo" if read_header(data).version == ELBO_VERSION else "rd", weights)
