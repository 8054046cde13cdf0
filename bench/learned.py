"""ssvcodec in the rate-quality benchmark: ``python -m ssvcodec.bench.rd --plugin bench.learned ...``.

Registers three :class:`bench.codecs.Codec` entries:

``ssvcodec``
    the default lossy codec (the rate-distortion ssVAE, :class:`codec.rd_api.RDCodec`): per
    quality ``Q`` ONE stream with every level, exactly ``ssvcodec encode IMAGE -o F.ssv --quality
    Q``. One operating point per progressive level ``L`` on the curve ``ssvcodec/L<L>``, key
    ``q=Q``. Its byte count is what a progressive decoder needs to show level ``L``: header + every
    chunk of level <= L, i.e. ``LevelImage.bytes_used``, which equals the size of ``ssvcodec
    truncate F.ssv --levels L`` and of ``ssvcodec encode ... --levels L``. The point is decoded from
    that prefix alone.
``ssvcodec+y``
    the rate-distortion model with ``--with-y`` (format version 4): curve ``ssvcodec+y/CR<L>``, the
    last level's conditional reconstruction given y = x[::2, ::2] (the lower levels are
    ``ssvcodec``'s).
``ssvcodec-lossless``
    the rate-distortion model with ``--lossless`` (format version 4: every lossy level, then the
    lossless head's X chunk): one bit-exact point per quality (the whole file, lossy prefix
    included).

Derived curve ``ssvcodec/best``: the upper envelope (Pareto front) of PSNR over bpp of every
*averaged* point of the ``ssvcodec/*`` and ``ssvcodec+y/*`` curves in the run: sorted by mean bpp,
a point is kept when its mean PSNR beats every cheaper point.  Each of its points is a fixed
setting (quality, levels) applied to every image, so it is a rate an encoder can actually hit;
its key names the source, e.g. ``L2@q=4``.  (Per image the front is not re-optimised.)

Weights: ``--weights PATH`` (the lossy model; else ``$SSVCODEC_WEIGHTS``, else the shipped
``weights/ssvae-rd.safetensors``), ``--lossless-weights PATH`` (the lossless head; else the shipped
``weights/ssvae-lossless.safetensors``) and ``--elbo-weights PATH`` (else the shipped
``weights/ssvae-codec.safetensors``).

Every row of an ssvcodec point carries ``quality``, ``level``, ``label``, ``with_y``,
``lossless_stream`` and ``cli`` (the command(s) whose output file has exactly ``n_bytes`` bytes);
``meta["plugins"]["bench.learned"]`` records the weights files and fingerprints.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .codecs import Codec, OperatingPoint, register

WEIGHTS_ENV = "SSVCODEC_WEIGHTS"
RD_QUALITIES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)  # RD model: lambda = 0.0009 * 2^q (the instance
#                                                          sweeps every integer of its model's quality_range)
CURVE_PREFIXES = ("ssvcodec/", "ssvcodec+y/")
BEST = "ssvcodec/best"

_settings: dict[str, Any] = {"weights": None, "elbo_weights": None, "lossless_weights": None}
_loaded: dict[str, Any] = {}


def default_weights() -> Path:
    from ..models.io import WEIGHTS_DIR

    return WEIGHTS_DIR / "ssvae-rd.safetensors"


def default_elbo_weights() -> Path:
    from ..models.io import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS


def weights_path() -> Path:
    """``set_weights``/``--weights``, else ``$SSVCODEC_WEIGHTS``, else the shipped RD weights."""
    w = _settings["weights"] or os.environ.get(WEIGHTS_ENV) or default_weights()
    return Path(w).expanduser().resolve()


def elbo_weights_path() -> Path:
    """The ELBO likelihood model of ``bench.cifar``'s NLL rows (``--elbo-weights``)."""
    return Path(_settings["elbo_weights"] or default_elbo_weights()).expanduser().resolve()


def default_lossless_weights() -> Path:
    from ..models.io import LOSSLESS_WEIGHTS

    return LOSSLESS_WEIGHTS


def lossless_weights_path() -> Path:
    return Path(_settings["lossless_weights"] or default_lossless_weights()).expanduser().resolve()


def set_weights(path: str | Path | None, elbo: str | Path | None = None, lossless: str | Path | None = None) -> None:
    _settings["weights"] = str(path) if path else None
    _settings["elbo_weights"] = str(elbo) if elbo else None
    _settings["lossless_weights"] = str(lossless) if lossless else None


def load_codec(weights: Path | None = None):  # -> codec.rd_api.RDCodec
    """The API codec for ``weights`` (default :func:`weights_path`), loaded once per path."""
    key = str(weights or weights_path())
    if key not in _loaded:
        from ..codec.rd_api import RDCodec
        _loaded[key] = RDCodec(key, lossless_weights=lossless_weights_path())
    return _loaded[key]


def qkey(q: Any) -> str:
    """The quality as the stream stores it (2 decimals), as text: ``4``, ``0.5``."""
    return f"{round(float(q), 2):g}"


def level_ends(data: bytes) -> dict[int, int]:
    """``{progressive level: bytes a decoder needs for it}`` (header + chunks of levels <= L):
    the same numbers as ``LevelImage.bytes_used`` and ``len(truncate_levels(data, L))``."""
    from ..codec.bitstream import level_ends as ends_of, read_stream

    return ends_of(read_stream(data))


@dataclass(frozen=True)
class LearnedPoint(OperatingPoint):
    """An operating point with ``extra`` row fields (bench.rd adds them to the row)."""

    extra: dict[str, Any] = field(default_factory=dict)


class _SSVBase(Codec):
    """Shared mechanics of the ssvcodec entries."""

    with_y: ClassVar[bool] = False
    lossless_stream: ClassVar[bool] = False
    qualities = RD_QUALITIES
    quality_label = "q"

    def __init__(self, threads: int = 1, weights: str | Path | None = None):
        super().__init__(threads)
        self.weights = Path(weights).resolve() if weights else weights_path()
        self.api = load_codec(self.weights)
        if self.qualities is RD_QUALITIES:
            lo, hi = self.api.q_range  # every integer quality the model was trained on
            self.qualities = tuple(float(q) for q in range(math.ceil(lo), math.floor(hi) + 1))

    @classmethod
    def unavailable_reason(cls) -> str | None:
        w = weights_path()
        if not w.exists():
            return f"weights {w} not found (give --weights PATH)"
        return None

    def point_key(self, q: Any) -> str:
        return f"q={qkey(q)}"

    def encode(self, img: np.ndarray, q: Any) -> bytes:
        return self.api.encode(img, quality=float(q), lossless=self.lossless_stream, with_y=self.with_y)

    def decode(self, data: bytes) -> np.ndarray:
        return self.api.decode(data)

    def label(self, level: int) -> str:
        return f"CR{level}" if self.with_y and level == self.api.n_levels else f"L{level}"

    def cli(self, q: Any, level: int | None = None) -> str:
        """Shell commands whose last output file has exactly the point's bytes."""
        opts = f"--quality {qkey(q)}"
        if self.lossless_stream:
            opts += " --lossless"
        elif self.with_y:
            opts += " --with-y"
        if self.weights != default_weights().resolve():
            opts += f" --weights {self.weights}"
        if (self.lossless_stream or self.with_y) and lossless_weights_path() != default_lossless_weights().resolve():
            opts += f" --lossless-weights {lossless_weights_path()}"
        cmd = f"ssvcodec encode IMAGE -o s.ssv {opts}"
        if level is not None:
            cmd += f"  (level {level}: ssvcodec truncate s.ssv --levels {level} -o s{level}.ssv," \
                   f" same bytes as encode --levels {level})"
        return cmd

    def _extra(self, q: Any, level: int, label: str, data: bytes, n_bytes: int, top: int) -> dict[str, Any]:
        return {"quality": round(float(q), 2), "level": level, "label": label, "with_y": self.with_y,
                "lossless_stream": self.lossless_stream, "stream_bytes": len(data),
                "cli": self.cli(q, None if level == top else level)}

    derived_curves = None  # set below (a staticmethod shared by the two lossy classes)


def pareto_best(curves: dict[str, dict], name: str = BEST) -> dict[str, dict]:
    """``{name: curve}``: upper envelope of mean PSNR over mean bpp of the averaged points of the
    ``ssvcodec/*`` and ``ssvcodec+y/*`` curves (only points averaged over every image)."""
    cands = []
    for cname, c in curves.items():
        if cname == name or c.get("lossless") or not cname.startswith(CURVE_PREFIXES):
            continue
        n_max = max(p["n_images"] for p in c["points"])
        for p in c["points"]:
            if p["n_images"] == n_max:
                cands.append((cname, p))
    if not cands:
        return {}
    cands.sort(key=lambda cp: (cp[1]["bpp"], -cp[1]["psnr"]))
    front, best_psnr = [], -float("inf")
    for cname, p in cands:
        if p["psnr"] > best_psnr:
            best_psnr = p["psnr"]
            q = dict(p)
            q["key"] = f"{cname.split('/', 1)[1]}@{p['key']}"
            q["source"] = cname
            front.append(q)
    return {name: {"codec": "ssvcodec", "lossless": False, "points": front, "complete": True,
                   "derived": "upper envelope of PSNR vs bpp over the averaged ssvcodec points"}}


@register
class SSVCodec(_SSVBase):
    """One stream per quality with every level: curves ssvcodec/L1..L<n>."""

    name = "ssvcodec"
    derived_curves = staticmethod(pareto_best)

    def operating_points(self, data: bytes, q: Any) -> list[OperatingPoint]:
        from ..codec.bitstream import truncate_levels

        ends = level_ends(data)
        top = max(ends)
        pts: list[OperatingPoint] = []
        for level, n in ends.items():
            label = self.label(level)
            if self.with_y and not label.startswith("CR"):
                continue  # the levels below y: ssvcodec's curves
            prefix = truncate_levels(data, level)
            assert len(prefix) == n
            pts.append(LearnedPoint(f"{self.name}/{label}", self.point_key(q), n,
                                    lambda p=prefix: self.api.decode(p),
                                    self._extra(q, level, label, data, n, top)))
        return pts


@register
class SSVCodecY(SSVCodec):
    """The rate-distortion model with ``--with-y``: curve ssvcodec+y/CR<L>."""

    name = "ssvcodec+y"
    with_y = True
    qualities = (2.0, 6.0)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return SSVCodecLossless.unavailable_reason()


@register
class SSVCodecLossless(_SSVBase):
    """The rate-distortion model with ``--lossless``: one bit-exact point per quality (the whole
    file, the lossy levels included)."""

    name = "ssvcodec-lossless"
    lossless = True
    lossless_stream = True

    def __init__(self, threads: int = 1, weights: str | Path | None = None):
        super().__init__(threads, weights)
        self.qualities = (self.api.default_lossless_quality,)  # the CLI's default

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if not lossless_weights_path().exists():
            return f"lossless head {lossless_weights_path()} not found (give --lossless-weights PATH)"
        return super().unavailable_reason()

    def operating_points(self, data: bytes, q: Any) -> list[OperatingPoint]:
        from ..codec.bitstream import describe, read_stream

        chunks = describe(read_stream(data))
        level = max(c["progressive_level"] for c in chunks)
        extra = self._extra(q, level, "lossless", data, len(data), level)
        extra["payload_bytes"] = int(sum(c["payload_bytes"] for c in chunks))
        return [LearnedPoint(self.name, self.point_key(q), len(data), lambda: self.api.decode(data), extra)]


LEARNED_CODECS = ("ssvcodec", "ssvcodec+y", "ssvcodec-lossless")


# ----- bench.rd plugin hooks -------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None,
                        help=f"ssvcodec weights (default: ${WEIGHTS_ENV} or the shipped {default_weights().name})")
    parser.add_argument("--elbo-weights", default=None,
                        help=f"the ELBO likelihood model of bench.cifar's NLL rows (default: {default_elbo_weights().name})")
    parser.add_argument("--lossless-weights", default=None,
                        help="the lossless head of ssvcodec-lossless (default: the shipped ssvae-lossless.safetensors)")


def configure(args: argparse.Namespace) -> None:
    set_weights(getattr(args, "weights", None), getattr(args, "elbo_weights", None),
                getattr(args, "lossless_weights", None))


def describe() -> dict[str, Any]:
    import json

    from ..models.io import weights_fingerprint

    out: dict[str, Any] = {}
    for role, w in (("weights", weights_path()), ("elbo_weights", elbo_weights_path()),
                    ("lossless_weights", lossless_weights_path())):
        info: dict[str, Any] = {"path": str(w), "exists": w.exists()}
        if w.exists():
            info["fingerprint"] = weights_fingerprint(w).hex()
            meta = w.with_suffix(".json")
            if meta.exists():
                info["weights_json"] = json.loads(meta.read_text())
        out[role] = info
    out["curves"] = ("ssvcodec/L<L>: stream of `ssvcodec encode --quality Q` (rate-distortion model) truncated "
                     "after level L; ssvcodec+y/CR<L>: the rate-distortion model with --with-y; ssvcodec-lossless: the "
                     "rate-distortion model with --lossless (lossy levels + the lossless head's X chunk); ssvcodec/best: upper envelope of the averaged ssvcodec points")
    return out
