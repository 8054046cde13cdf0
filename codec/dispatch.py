"""Which codec reads a stream: format versions 5, 4 and 2 are the rate-distortion model's
(:class:`codec.rd_api.RDCodec`; 5 and 4 may hold Y and X chunks). Older versions are refused with a
one-line reason naming the last commit that decodes them: version 1, the ELBO model's streams of
sessions 1-7 (the ELBO model stays in ``models/`` for the thesis' likelihood results, not in the
codec), and version 3, session 8's Y and X chunks, coded against a float64 render that version 4
replaced by an exact integer one (:mod:`models.exact_render`). Imported lazily (it imports torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .bitstream import ELBO_VERSION, FLOAT64_RENDER_VERSION, read_header

#: the last commit whose ssvcodec decodes format version 1
LAST_ELBO_DECODER = "0589b08"
#: the last commit whose ssvcodec decodes format version 3
LAST_FLOAT64_RENDER_DECODER = "853d2af"


def open_codec(weights: str | Path | None = None, device: str = "cpu",
               lossless_weights: str | Path | None = None) -> Any:
    """The codec of ``weights`` and the lossless head ``lossless_weights`` (default: the shipped ones)."""
    from .rd_api import RDCodec

    extra = {"lossless_weights": lossless_weights} if lossless_weights else {}
    return RDCodec(weights, device, **extra) if weights else RDCodec(device=device, **extra)


def codec_for_stream(data: bytes, weights: str | Path | None = None,
                     lossless_weights: str | Path | None = None) -> Any:
    """The codec that decodes ``data`` (by its header's format version)."""
    refuse_old_version(read_header(data).version)
    return open_codec(weights, lossless_weights=lossless_weights)


def refuse_old_version(version: int) -> None:
    """Raise ValueError, in one line naming the last commit that decodes it, for a format
    version the codec no longer decodes."""
    if version == ELBO_VERSION:
        raise ValueError("format version 1 (the ELBO model's streams, ssvcodec sessions 1-7) is no longer decoded: "
                         f"use ssvcodec at commit {LAST_ELBO_DECODER} or earlier")
    if version == FLOAT64_RENDER_VERSION:
        raise ValueError("format version 3 (lossless and CR streams of ssvcodec session 8) is no longer decoded: "
                         f"use ssvcodec at commit {LAST_FLOAT64_RENDER_DECODER} or earlier")
