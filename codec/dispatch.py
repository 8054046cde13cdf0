"""Which codec reads a stream: format versions 2 and 3 are the rate-distortion model's
(:class:`codec.rd_api.RDCodec`; 3 may hold Y and X chunks). Version 1, the ELBO model's streams of
sessions 1-7, is refused with a one-line reason: the ELBO model stays in ``models/`` for the
thesis' likelihood results, not in the codec. Imported lazily (it imports torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .bitstream import ELBO_VERSION, read_header

#: the last commit whose ssvcodec decodes format version 1
LAST_ELBO_DECODER = "0589b08"


def open_codec(weights: str | Path | None = None, device: str = "cpu",
               lossless_weights: str | Path | None = None) -> Any:
    """The codec of ``weights`` and the lossless head ``lossless_weights`` (default: the shipped ones)."""
    from .rd_api import RDCodec

    extra = {"lossless_weights": lossless_weights} if lossless_weights else {}
    return RDCodec(weights, device, **extra) if weights else RDCodec(device=device, **extra)


def codec_for_stream(data: bytes, weights: str | Path | None = None,
                     lossless_weights: str | Path | None = None) -> Any:
    """The codec that decodes ``data`` (by its header's format version)."""
    if read_header(data).version == ELBO_VERSION:
        raise ValueError("format version 1 (the ELBO model's streams, ssvcodec sessions 1-7) is no longer decoded: "
                         f"use ssvcodec at commit {LAST_ELBO_DECODER} or earlier")
    return open_codec(weights, lossless_weights=lossless_weights)
