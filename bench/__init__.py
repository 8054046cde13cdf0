"""Rate-quality benchmark of ssvcodec against classical anchors.

Modules (one job each):

- :mod:`bench.metrics` -- PSNR, MS-SSIM and bits per pixel on 8-bit RGB images.
- :mod:`bench.bdrate`  -- Bjøntegaard delta rate / PSNR (piecewise cubic) and
  quality at fixed rates.
- :mod:`bench.codecs`  -- one :class:`~bench.codecs.Codec` interface, the classical
  anchors (JPEG, WebP, JPEG 2000 with and without quality layers, AVIF, JPEG XL,
  PNG) and a registry by stable names.
- :mod:`bench.rd`      -- ``python -m ssvcodec.bench.rd``: run every codec over an image set,
  write JSON, a markdown table and RD plots.

The measurement protocol is ``docs``/design ``ssvae-codec.md`` §4.
"""
