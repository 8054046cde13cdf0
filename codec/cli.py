"""``ssvcodec``: encode, decode (progressively), inspect and truncate ssvcodec files.

Every error is one line on stderr and a non-zero exit status; outputs are written atomically
(a temporary file renamed into place), so a failed command leaves no partial file.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.metrics import bpp

from .api import DEFAULT_REFINE, Codec, load_image
from .bitstream import HEADER_SIZE, BitstreamError, read_stream, truncate_levels
from .quantize import DEFAULT_QUALITY, MAX_QUALITY, MIN_QUALITY


class CodecFailure(click.ClickException):
    exit_code = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def png_bytes(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CodecFailure(f"cannot read {path}: {e.strerror or e}") from None


def _codec(weights: str | None, device: str = "cpu") -> Codec:
    try:
        return Codec(weights, device) if weights else Codec(device=device)
    except (FileNotFoundError, ValueError) as e:
        raise CodecFailure(str(e)) from None


@click.group()
@click.version_option(package_name="ssvcodec")
def cli() -> None:
    """Progressive learned image codec built on the Self-Supervised VAE."""


weights_option = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                              help="safetensors weights (default: the shipped model)")
threads_option = click.option("--threads", type=click.IntRange(1, 256), default=None,
                              help="torch threads for --refine (default: all cores); what decides the file's "
                                   "bytes and the decoded pixels always runs on one thread")


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .ssv file to write")
@click.option("--levels", type=click.IntRange(1, 9), default=None, help="latent levels to write (default: all)")
@click.option("--quality", type=click.FloatRange(MIN_QUALITY, MAX_QUALITY), default=DEFAULT_QUALITY, show_default=True,
              help="latent precision: quantization step = 1/quality prior standard deviations")
@click.option("--with-y", is_flag=True, help="add the lossless y_k chunks (conditional reconstruction)")
@click.option("--lossless", is_flag=True, help="add a last chunk with x itself: bit-exact decode (implies --with-y)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--tile", type=int, default=None, help="tile side for large images (default: 1024 above 4 MP)")
@click.option("--refine", type=click.IntRange(0, 1000), default=DEFAULT_REFINE, show_default=True,
              help="gradient steps fitting each latent to what the decoder will render (0: posterior means)")
@weights_option
@threads_option
def encode(image: str, output: str, levels: int | None, quality: float, with_y: bool, lossless: bool,
           device: str, tile: int | None, refine: int, weights: str | None, threads: int | None) -> None:
    """Encode IMAGE (PNG, JPEG, WebP, ...) into an ssvcodec file."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    codec = _codec(weights, device)
    try:
        rgb = load_image(image)
    except FileNotFoundError:
        raise CodecFailure(f"no such file: {image}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise CodecFailure(f"cannot read image {image}: {e}") from None
    for note in rgb.notices:
        click.echo(f"note: {note}", err=True)
    h, w = rgb.pixels.shape[:2]
    t0 = time.perf_counter()
    try:
        data, _ = codec.encode_with_report(rgb, levels, quality, with_y, lossless, tile, progress=True, refine=refine)
    except ValueError as e:
        raise CodecFailure(str(e)) from None
    dt = time.perf_counter() - t0
    atomic_write(Path(output), data)
    click.echo(f"{output}: {w}x{h}, {len(data)} bytes, {bpp(len(data), h, w):.4f} bpp, encoded in {dt:.2f} s")


@cli.command()
@click.argument("stream", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="PNG to write")
@click.option("--levels", type=click.IntRange(1, 10), default=None, help="decode up to this level (default: all)")
@click.option("--progressive", is_flag=True, help="also write one PNG per level: OUTPUT_L1.png, OUTPUT_L2.png, ...")
@weights_option
@threads_option
def decode(stream: str, output: str, levels: int | None, progressive: bool, weights: str | None,
           threads: int | None) -> None:
    """Decode STREAM to a PNG (the highest whole level, or --levels)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    data = _read(stream)
    codec = _codec(weights)
    out = Path(output)
    results = []
    t0 = time.perf_counter()
    try:
        parsed = read_stream(data)
        if parsed.truncated:
            click.echo(f"warning: {stream} is truncated; decoding its whole levels only", err=True)
        for step in codec.decode_progressive(data, levels, only_last=not progressive, progress=True):
            results.append((step, time.perf_counter() - t0))
    except (BitstreamError, ValueError) as e:
        raise CodecFailure(str(e)) from None
    h, w = results[-1][0].image.shape[:2]
    for step, t in results:
        if progressive:
            path = out.with_name(f"{out.stem}_L{step.level}{out.suffix or '.png'}")
            atomic_write(path, png_bytes(step.image))
            click.echo(f"level {step.level} ({step.label}): {step.bytes_used} bytes, "
                       f"{bpp(step.bytes_used, h, w):.4f} bpp, {t:.2f} s -> {path}")
    atomic_write(out, png_bytes(results[-1][0].image))
    click.echo(f"{output}: {w}x{h}, level {results[-1][0].level} ({results[-1][0].label}), "
               f"decoded in {results[-1][1]:.2f} s")


@cli.command()
@click.argument("stream", type=click.Path(dir_okay=False))
@weights_option
def info(stream: str, weights: str | None) -> None:
    """Print the header, the bytes and bpp of every chunk and level, and for latent chunks the
    model's estimate of their size (when the stream's weights are at hand)."""
    data = _read(stream)
    try:
        parsed = read_stream(data)
    except BitstreamError as e:
        raise CodecFailure(str(e)) from None
    estimates: list[float | None] = [None] * len(parsed.chunks)
    try:
        estimates = _codec(weights).latent_estimates(data)
    except (CodecFailure, BitstreamError, ValueError) as e:
        click.echo(f"note: no size estimates ({e})", err=True)
    hd = parsed.header
    px = hd.height * hd.width
    click.echo(f"{stream}: ssvcodec v{hd.version}, {hd.width}x{hd.height} (original channels {hd.channels}), "
               f"model levels K={hd.levels}, quality {hd.quality}, flags {hd.flags!s}, "
               f"tiles {hd.tile_grid if hd.tiled else 'none'}, weights {hd.fingerprint.hex()}")
    click.echo(f"{'chunk':<24}{'prog. level':>12}{'bytes':>10}{'bpp':>10}{'payload':>10}{'model est.':>12}{'diff':>8}")
    by_level: dict[int, int] = {}
    for chunk, span, est in zip(parsed.chunks, parsed.spans, estimates):
        by_level[chunk.progressive_level] = by_level.get(chunk.progressive_level, 0) + span.size
        n = len(chunk.payload)
        e = f"{est / 8:>12.1f}{100 * (n - est / 8) / max(est / 8, 1):>7.2f}%" if est is not None else f"{'-':>12}{'-':>8}"
        click.echo(f"{chunk.label:<24}{chunk.progressive_level:>12}{span.size:>10}{8 * span.size / px:>10.4f}{n:>10}{e}")
    cum = HEADER_SIZE
    for lv in sorted(by_level):
        cum += by_level[lv]
        click.echo(f"level {lv}: {by_level[lv]} bytes; decoding up to it reads {cum} bytes = {8 * cum / px:.4f} bpp")
    click.echo(f"total {len(data)} bytes = {8 * len(data) / px:.4f} bpp" + (", TRUNCATED" if parsed.truncated else ""))


@cli.command()
@click.argument("stream", type=click.Path(dir_okay=False))
@click.option("--levels", type=click.IntRange(1, 10), required=True, help="keep levels 1..N")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def truncate(stream: str, levels: int, output: str) -> None:
    """Write the prefix of STREAM holding its first N levels (progressive transmission)."""
    data = _read(stream)
    try:
        parsed = read_stream(data)
        if levels > parsed.max_level:
            raise CodecFailure(f"{stream} holds levels 1..{parsed.max_level}, not {levels}")
        out = truncate_levels(data, levels)
    except BitstreamError as e:
        raise CodecFailure(str(e)) from None
    atomic_write(Path(output), out)
    click.echo(f"{output}: levels 1..{levels}, {len(out)} of {len(data)} bytes")


def main(argv: list[str] | None = None) -> None:
    """Entry point; any unexpected failure is still reported as one line."""
    try:
        cli.main(args=argv, prog_name="ssvcodec", standalone_mode=True)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the CLI promises one clear line, never a traceback
        click.echo(f"error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
