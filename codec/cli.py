"""``ssvcodec``: encode, decode (progressively), inspect and truncate ssvcodec files.

Safety: an output is never one of the inputs (links included) and never replaces an existing file
without ``--force``; its folder must be writable before any work starts; it is written atomically
(a temporary file in the output's folder, renamed into place, with the umask's mode), so a failed
command leaves no partial file. ``-`` reads stdin or writes stdout.

Exit status: 0 success; 1 the command failed (one line on stderr, nothing written); 2 bad usage;
3 a batch in which some files failed (each reported, the others written).

torch is imported only inside the commands that run a model, so ``--help``, ``--version``,
``info`` (without estimates) and ``truncate`` answer at once.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from .bitstream import ELBO_VERSION, BitstreamError, HeaderFlags, read_stream, truncate_levels
from .dispatch import codec_for_stream, open_codec
from .images import ALPHA_NOTICE, InputError, RGBImage, open_image

EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL = 1, 2, 3
#: decoded image formats by output extension (Pillow format names)
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
                  ".tiff": "TIFF", ".ppm": "PPM"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".bmp", ".gif"}


class CodecFailure(click.ClickException):
    exit_code = EXIT_FAILURE

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


# ----- output safety ----------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(output: str, inputs: list[str], force: bool) -> None:
    """Refuse, before any work, an output that is an input, that exists (without ``force``) or
    whose folder is missing or not writable."""
    if output == "-":
        return
    out = Path(output)
    for src in inputs:
        if src != "-" and out.exists() and Path(src).exists() and os.path.samefile(out, src):
            raise CodecFailure(f"refusing to write {output}: it is the input {src}")
    if out.is_dir():
        raise CodecFailure(f"{output} is a folder")
    if out.exists() and not force:
        raise CodecFailure(f"{output} exists (use --force to replace it)")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise CodecFailure(f"cannot write {output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CodecFailure(f"cannot write {output}: folder {folder} is not writable")


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (``-``: stdout) through a temporary file in the same folder,
    renamed into place, with the mode a plain ``open`` would give (0666 less the umask)."""
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def image_bytes(img: np.ndarray, fmt: str) -> bytes:
    """``img`` encoded as ``fmt`` (JPEG at quality 95, WebP lossless, the others lossless).
    A format without alpha (JPEG, PPM) gets the colour of an RGBA image (see :func:`drops_alpha`)."""
    if drops_alpha(img, fmt):
        img = np.ascontiguousarray(img[..., :3])
    buf = io.BytesIO()
    options: dict[str, Any] = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True, "exact": True}}.get(fmt, {})
    Image.fromarray(img).save(buf, format=fmt, **options)
    return buf.getvalue()


def drops_alpha(img: np.ndarray, fmt: str) -> bool:
    """Whether writing ``img`` as ``fmt`` loses its alpha plane."""
    return img.ndim == 3 and img.shape[2] == 4 and fmt in ("JPEG", "PPM")


def output_format(output: str) -> str:
    """The image format an output name asks for (``-``: PNG); other extensions are refused."""
    if output == "-":
        return "PNG"
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise CodecFailure(f"cannot write {output}: use one of {', '.join(sorted(OUTPUT_FORMATS))} (or - for PNG on stdout)")
    return OUTPUT_FORMATS[suffix]


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CodecFailure(f"cannot read {path}: {e.strerror or e}") from None


def _load(path: str) -> RGBImage:
    try:
        return open_image(sys.stdin.buffer if path == "-" else path, "stdin" if path == "-" else path)
    except FileNotFoundError:
        raise CodecFailure(f"no such file: {path}") from None
    except InputError as e:
        raise CodecFailure(str(e)) from None
    except OSError as e:
        raise CodecFailure(f"cannot read image {path}: {e}") from None


def _bpp(n_bytes: int, h: int, w: int) -> float:
    return 8.0 * n_bytes / (h * w)


# ----- messages ---------------------------------------------------------------------------------
class Say:
    """Messages on stderr by verbosity: -q only errors, default one line per file, -v details."""

    def __init__(self, verbosity: int) -> None:
        self.verbosity = verbosity

    def __call__(self, msg: str, level: int = 1) -> None:
        if self.verbosity >= level:
            click.echo(msg, err=True)


# ----- codecs (imported lazily: they import torch) --------------------------------------------
def _open_codec(weights: str | None, device: str = "cpu", lossless_weights: str | None = None) -> Any:
    try:
        return open_codec(weights, device, lossless_weights)
    except (FileNotFoundError, ValueError) as e:
        raise CodecFailure(str(e)) from None


def _decoder_for(data: bytes, weights: str | None, lossless_weights: str | None = None) -> Any:
    try:
        return codec_for_stream(data, weights, lossless_weights)
    except BitstreamError as e:
        raise CodecFailure(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise CodecFailure(str(e)) from None


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssvcodec", prog_name="ssvcodec")
def cli() -> None:
    """Progressive learned image codec built on the Self-Supervised VAE.

    Exit status: 0 success, 1 failure (nothing written), 2 bad usage, 3 some files of a batch failed.
    """


weights_option = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                              help="safetensors weights (default: the shipped model for the stream's format)")
threads_option = click.option("--threads", type=click.IntRange(1, 256), default=None,
                              help="torch threads for the renders and the encoder (default: all cores); what decides "
                                   "the file's bytes runs on one thread or in float64, so any count reads any file")
lossless_weights_option = click.option("--lossless-weights", type=click.Path(dir_okay=False), default=None,
                                       help="safetensors weights of the lossless head (default: the shipped one)")
force_option = click.option("-f", "--force", is_flag=True, help="replace existing output files")
quiet_option = click.option("-q", "--quiet", "verbosity", flag_value=0, help="print errors only")
verbose_option = click.option("-v", "--verbose", "verbosity", flag_value=2, help="print details")
jobs_option = click.option("-j", "--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
                           help="processes for a batch")


def _expand_inputs(inputs: tuple[str, ...], suffixes: set[str]) -> list[str]:
    out: list[str] = []
    for name in inputs:
        p = Path(name)
        if name != "-" and p.is_dir():
            out += sorted(str(f) for f in p.iterdir() if f.suffix.lower() in suffixes and f.is_file())
        else:
            out.append(name)
    return out


def _plan(inputs: tuple[str, ...], output: str | None, out_dir: str | None, suffixes: set[str],
          new_suffix: str) -> list[tuple[str, str]]:
    """(input, output) pairs: one input with ``-o``, or any inputs / folders with ``--out-dir``."""
    files = _expand_inputs(inputs, suffixes)
    if not files:
        raise CodecFailure("no input files")
    if out_dir is None:
        if output is None:
            raise click.UsageError("give -o OUTPUT (one input) or --out-dir FOLDER (a batch)")
        if len(files) > 1:
            raise click.UsageError(f"{len(files)} inputs need --out-dir FOLDER, not -o")
        return [(files[0], output)]
    if output is not None:
        raise click.UsageError("give either -o or --out-dir, not both")
    if "-" in files:
        raise click.UsageError("stdin (-) cannot be part of a batch")
    d = Path(out_dir)
    if not d.is_dir():
        raise CodecFailure(f"--out-dir {out_dir} is not a folder")
    pairs = [(f, str(d / (Path(f).stem + new_suffix))) for f in files]
    names = [o for _, o in pairs]
    dup = {o for o in names if names.count(o) > 1}
    if dup:
        raise CodecFailure(f"two inputs would write {sorted(dup)[0]}: rename one")
    return pairs


def _run_batch(pairs: list[tuple[str, str]], work: Callable[..., str], args: dict[str, Any], jobs: int,
               say: Say) -> None:
    """Run ``work(src, dst, **args)`` for each pair (in ``jobs`` processes), report each failure
    and exit 3 if any failed."""
    from tqdm import tqdm

    failed = 0
    if len(pairs) == 1:
        say(work(*pairs[0], **args))
        return
    bar = tqdm(total=len(pairs), unit="file", disable=None if say.verbosity else True, file=sys.stderr)
    if jobs == 1:
        results: Iterator[tuple[tuple[str, str], Any]] = ((p, _try(work, p, args)) for p in pairs)
    else:
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_set_threads,
                                   initargs=(max(1, (os.cpu_count() or 1) // jobs),))
        futs = {pool.submit(_try, work, p, args): p for p in pairs}
        results = ((futs[f], f.result()) for f in as_completed(futs))
    for (src, _), (ok, msg) in results:
        bar.update(1)
        if ok and say.verbosity >= 1:
            bar.write(msg, file=sys.stderr)
        elif not ok:
            failed += 1
            bar.write(f"error: {src}: {msg}", file=sys.stderr)
    bar.close()
    if jobs > 1:
        pool.shutdown()
    if failed:
        say(f"{failed} of {len(pairs)} files failed", 0)
        sys.exit(EXIT_PARTIAL)


def _try(work: Callable[..., str], pair: tuple[str, str], args: dict[str, Any]) -> tuple[bool, str]:
    try:
        return True, work(*pair, **args)
    except click.ClickException as e:
        return False, e.format_message()
    except Exception as e:  # noqa: BLE001 - one file's failure must not stop the batch
        return False, f"{type(e).__name__}: {e}"


# ----- encode -----------------------------------------------------------------------------------
_CODECS: dict[tuple[str | None, str, str | None], Any] = {}


def _cached_codec(weights: str | None, device: str, lossless_weights: str | None = None) -> Any:
    key = (weights, device, lossless_weights)
    if key not in _CODECS:
        _CODECS[key] = _open_codec(weights, device, lossless_weights)
    return _CODECS[key]


def _encode_one(src: str, dst: str, *, levels: int | None, quality: float | None, bpp: float | None,
                size: int | None, with_y: bool, lossless: bool, max_error: int, device: str, tile: int | None,
                weights: str | None, lossless_weights: str | None, verbosity: int) -> str:
    rgb = _load(src)
    say = Say(verbosity)
    for note in rgb.notices:
        if not (lossless and note == ALPHA_NOTICE):
            say(f"note: {src}: {note}")
    h, w = rgb.pixels.shape[:2]
    codec = _cached_codec(weights, device, lossless_weights)
    t0 = time.perf_counter()
    extra = ""
    try:
        if (lossless or with_y) and (bpp is not None or size is not None):
            raise CodecFailure("--bpp / --size set a lossy rate: with --lossless / --with-y give --quality (the lossy levels' q)")
        if bpp is not None or size is not None:
            res = codec.encode_to_rate(rgb, bpp=bpp, size=size, levels=levels, tile=tile)
            data, q = res.data, res.quality
            target = size if size is not None else bpp * h * w / 8  # type: ignore[operator]
            extra = f", quality {q:.2f} after {res.tries} tries ({100 * res.relative_error(target):+.1f} % from the target)"
        else:
            default = codec.default_lossless_quality if lossless else codec.default_quality
            q = codec.check_quality(default if quality is None else quality)
            data = codec.encode(rgb, levels, q, tile, progress=verbosity >= 1, lossless=lossless, max_error=max_error,
                                with_y=with_y)
    except ValueError as e:
        raise CodecFailure(str(e)) from None
    dt = time.perf_counter() - t0
    atomic_write(dst, data)
    return f"{dst}: {w}x{h}, {len(data)} bytes, {_bpp(len(data), h, w):.4f} bpp, encoded in {dt:.2f} s{extra}"


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="the .ssv file to write (- for stdout)")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="a batch: write FOLDER/NAME.ssv for every input image (folders expand to their images)")
@click.option("--levels", type=click.IntRange(1, 9), default=None,
              help="levels to write, 1..L (L = 4 for the shipped model; default: all)")
@click.option("--quality", type=click.FloatRange(-64.0, 64.0), default=None,
              help="lossy codec: q in the weights' trained range ([-4, 9] for the shipped ones), "
                   "lambda = 0.0009 * 2^q (default 4, about 0.9 bpp on Kodak with the shipped weights); "
                   "with --lossless: the lossy levels' q (default 0: the smallest lossless files)")
@click.option("--bpp", type=click.FloatRange(0.0, min_open=True), default=None,
              help="target bits per pixel of the whole file: bisection on --quality")
@click.option("--size", type=click.IntRange(1), default=None, help="target file size in bytes: bisection on --quality")
@click.option("--with-y", is_flag=True, help="add y = x[::2, ::2] exactly to the last level, which then shows the "
                                             "conditional reconstruction given y (CR); with --lossless it costs nothing extra")
@click.option("--lossless", is_flag=True, help="after every lossy level, a last level that decodes to the input bit for bit "
                                               "(grey, RGB or RGBA; the lossless head codes it given the last render)")
@click.option("--max-error", type=click.IntRange(0, 64), default=0,
              help="with --lossless: near-lossless, every colour sample within N of the input (0: exact)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: the float32 networks on the GPU (encoder, renders); the priors stay on the CPU in "
                   "float64, so a stream written with either decodes with either")
@click.option("--tile", type=int, default=None, help="tile side for large images (default: 1024 above 4 MP)")
@weights_option
@lossless_weights_option
@threads_option
@force_option
@jobs_option
@quiet_option
@verbose_option
def encode(inputs: tuple[str, ...], output: str | None, out_dir: str | None, levels: int | None,
           quality: float | None, bpp: float | None, size: int | None, with_y: bool, lossless: bool, max_error: int,
           device: str, tile: int | None, weights: str | None, lossless_weights: str | None, threads: int | None,
           force: bool, jobs: int, verbosity: int | None) -> None:
    """Encode images (PNG, JPEG, WebP, TIFF, ...; - for stdin) into ssvcodec files."""
    verbosity = 1 if verbosity is None else verbosity
    if sum(v is not None for v in (quality, bpp, size)) > 1:
        raise click.UsageError("give at most one of --quality, --bpp and --size")
    if max_error and not lossless:
        raise click.UsageError("--max-error bounds the lossless level: give --lossless too")
    pairs = _plan(inputs, output, out_dir, IMAGE_SUFFIXES, ".ssv")
    for src, dst in pairs:
        check_output(dst, [s for s, _ in pairs], force)
    _set_threads(threads)
    args = dict(levels=levels, quality=quality, bpp=bpp, size=size, with_y=with_y, lossless=lossless,
                max_error=max_error, device=device, tile=tile, weights=weights, lossless_weights=lossless_weights,
                verbosity=verbosity if len(pairs) == 1 else 0)
    _run_batch(pairs, _encode_one, args, jobs, Say(verbosity))


# ----- decode -----------------------------------------------------------------------------------
def _decode_one(src: str, dst: str, *, levels: int | None, progressive: bool, weights: str | None,
                lossless_weights: str | None, force: bool, verbosity: int) -> str:
    say = Say(verbosity)
    fmt = output_format(dst)
    data = _read(src)
    codec = _decoder_for(data, weights, lossless_weights)
    out = Path(dst)
    level_path = (lambda lv: str(out.with_name(f"{out.stem}_L{lv}{out.suffix}")))
    t0 = time.perf_counter()
    results = []
    try:
        parsed = read_stream(data)
        if parsed.truncated:
            say(f"warning: {src} is truncated; decoding its whole levels only")
        top = levels or parsed.max_level
        if progressive:
            if dst == "-":
                raise CodecFailure("--progressive writes one file per level: give a file name, not -")
            for lv in range(1, top + 1):
                check_output(level_path(lv), [src], force)
        for step in codec.decode_progressive(data, levels, only_last=not progressive, progress=verbosity >= 1):
            results.append((step, time.perf_counter() - t0))
    except (BitstreamError, ValueError) as e:
        raise CodecFailure(str(e)) from None
    last = results[-1][0]
    h, w = last.image.shape[:2]
    for step, t in results if progressive else []:
        atomic_write(level_path(step.level), image_bytes(step.image, fmt))
        say(f"level {step.level} ({step.label}): {step.bytes_used} bytes, {_bpp(step.bytes_used, h, w):.4f} bpp, "
            f"ready at {t:.2f} s -> {level_path(step.level)}")
    if drops_alpha(last.image, fmt):
        say(f"note: {dst}: {fmt} has no alpha channel; the image's alpha is not written (use .png, .webp or .tif)")
    atomic_write(dst, image_bytes(last.image, fmt))
    return f"{dst}: {w}x{h}, level {last.level} ({last.label}), {last.bytes_used} bytes read, decoded in {results[-1][1]:.2f} s"


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="image to write: .png .jpg .webp .tif .ppm (- for PNG on stdout)")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="a batch: write FOLDER/NAME.png for every .ssv input (folders expand to their .ssv files)")
@click.option("--levels", type=click.IntRange(1, 10), default=None, help="decode up to this level (default: all in the file)")
@click.option("--progressive", is_flag=True, help="also write one image per level: OUTPUT_L1, OUTPUT_L2, ... (OUTPUT is the last)")
@weights_option
@lossless_weights_option
@threads_option
@force_option
@jobs_option
@quiet_option
@verbose_option
def decode(inputs: tuple[str, ...], output: str | None, out_dir: str | None, levels: int | None, progressive: bool,
           weights: str | None, lossless_weights: str | None, threads: int | None, force: bool, jobs: int,
           verbosity: int | None) -> None:
    """Decode ssvcodec files (- for stdin) to images (the highest whole level, or --levels)."""
    verbosity = 1 if verbosity is None else verbosity
    pairs = _plan(inputs, output, out_dir, {".ssv"}, ".png")
    for src, dst in pairs:
        output_format(dst)
        check_output(dst, [s for s, _ in pairs], force)
    _set_threads(threads)
    args = dict(levels=levels, progressive=progressive, weights=weights, lossless_weights=lossless_weights,
                force=force, verbosity=verbosity if len(pairs) == 1 else 0)
    _run_batch(pairs, _decode_one, args, jobs, Say(verbosity))


# ----- info and truncate ------------------------------------------------------------------------
@cli.command()
@click.argument("stream", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--estimates", is_flag=True, help="also the model's estimate of each chunk's size (loads the model)")
@weights_option
def info(stream: str, estimates: bool, weights: str | None) -> None:
    """Print the header, the bytes and bpp of every chunk and level."""
    data = _read(stream)
    try:
        parsed = read_stream(data)
    except BitstreamError as e:
        raise CodecFailure(str(e)) from None
    est: list[float | None] = [None] * len(parsed.chunks)
    if estimates:
        try:
            est = _decoder_for(data, weights).latent_estimates(data)
        except (CodecFailure, BitstreamError, ValueError) as e:
            click.echo(f"note: no size estimates ({e})", err=True)
    hd = parsed.header
    px = hd.height * hd.width
    flags = "+".join(f.name for f in HeaderFlags if f and hd.flags & f) or "none"  # type: ignore[misc]
    model = "ELBO ssVAE" if hd.version == ELBO_VERSION else "rate-distortion ssVAE"
    quality = f"quality {hd.quality}" + ("" if hd.version == ELBO_VERSION else f" (lambda {0.0009 * 2 ** hd.quality:.4g})")
    click.echo(f"{stream}: ssvcodec format v{hd.version} ({model}), {hd.width}x{hd.height} (original channels {hd.channels}), "
               f"{hd.levels + 1} model levels, {quality}, chunk flags {flags}, "
               f"tiles {'x'.join(map(str, hd.tile_grid)) if hd.tiled else 'none'}, weights {hd.fingerprint.hex()}")
    click.echo(f"{'chunk':<24}{'level':>6}{'bytes':>10}{'bpp':>10}{'payload':>10}{'model est.':>12}{'diff':>8}")
    by_level: dict[int, int] = {}
    for chunk, span, e in zip(parsed.chunks, parsed.spans, est):
        by_level[chunk.progressive_level] = by_level.get(chunk.progressive_level, 0) + span.size
        n = len(chunk.payload)
        es = f"{e / 8:>12.1f}{100 * (n - e / 8) / max(e / 8, 1):>7.2f}%" if e is not None else f"{'-':>12}{'-':>8}"
        click.echo(f"{chunk.label:<24}{chunk.progressive_level:>6}{span.size:>10}{8 * span.size / px:>10.4f}{n:>10}{es}")
    cum = parsed.header_size
    for lv in sorted(by_level):
        cum += by_level[lv]
        click.echo(f"level {lv}: {by_level[lv]} bytes; decoding up to it reads {cum} bytes = {8 * cum / px:.4f} bpp")
    click.echo(f"total {len(data)} bytes = {8 * len(data) / px:.4f} bpp" + (", TRUNCATED" if parsed.truncated else ""))


@cli.command()
@click.argument("stream", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--levels", type=click.IntRange(1, 10), required=True, help="keep levels 1..N")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True))
@force_option
def truncate(stream: str, levels: int, output: str, force: bool) -> None:
    """Write the prefix of STREAM holding its first N levels (progressive transmission)."""
    check_output(output, [stream], force)
    data = _read(stream)
    try:
        parsed = read_stream(data)
        if levels > parsed.max_level:
            raise CodecFailure(f"{stream} holds levels 1..{parsed.max_level}, not {levels}")
        out = truncate_levels(data, levels)
    except BitstreamError as e:
        raise CodecFailure(str(e)) from None
    atomic_write(output, out)
    if output != "-":
        click.echo(f"{output}: levels 1..{levels}, {len(out)} of {len(data)} bytes", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point; any unexpected failure is still reported as one line."""
    try:
        cli.main(args=argv, prog_name="ssvcodec", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the CLI promises one clear line, never a traceback
        click.echo(f"error: {type(e).__name__}: {e}", err=True)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
