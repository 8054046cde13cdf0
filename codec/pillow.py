"""Pillow plugin: ``import ssvcodec.pillow`` registers ``.ssv`` files, so ``Image.open("x.ssv")``
decodes the whole stream (every level it holds) with the shipped weights of its format version.
``Image.open(...).reduce(f)`` / ``draft`` are Pillow's own (they act on the decoded image).

    import ssvcodec.pillow  # noqa: F401
    from PIL import Image
    Image.open("photo.ssv").save("photo.png")
"""
from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from .bitstream import MAGIC, BitstreamError, read_header

#: weights to decode with (None: the shipped weights of each stream's format version)
weights: str | None = None


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


class SSVImageFile(ImageFile.ImageFile):
    """An ssvcodec stream opened by Pillow; the pixels are decoded on ``load()``."""

    format = "SSV"
    format_description = "ssvcodec progressive learned image"

    def _open(self) -> None:
        fp: IO[bytes] = self.fp  # type: ignore[assignment]
        self._ssv = fp.read()
        try:
            hd = read_header(self._ssv)
        except BitstreamError as e:
            raise SyntaxError(str(e)) from None
        self._size = (hd.width, hd.height)
        self._mode = "L" if hd.channels == 1 else "RGB"
        self.info["ssv_levels"] = hd.levels + 1
        self.info["ssv_quality"] = hd.quality
        self.tile = []

    def load(self):  # type: ignore[no-untyped-def]
        if self._im is None:
            from .dispatch import codec_for_stream
            img = Image.fromarray(codec_for_stream(self._ssv, weights).decode(self._ssv))
            self.im = img.im
            self._mode = img.mode
        return Image.Image.load(self)


Image.register_open(SSVImageFile.format, SSVImageFile, _accept)
Image.register_extension(SSVImageFile.format, ".ssv")
