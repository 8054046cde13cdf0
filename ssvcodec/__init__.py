"""ssvcodec: a progressive learned image codec built on the Self-Supervised VAE.

The installed import names live under this package: ``ssvcodec.codec`` (bitstream, entropy
coding, API, CLI), ``ssvcodec.models`` (the ssVAE maths and training), ``ssvcodec.bench``
(measurement scripts) and ``ssvcodec.weights`` (the shipped weights, package data).
``import ssvcodec.pillow`` registers ``.ssv`` files with Pillow.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ssvcodec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
