"""``import ssvcodec.pillow`` registers ``.ssv`` files with Pillow (see :mod:`ssvcodec.codec.pillow`)."""
from .codec.pillow import SSVImageFile  # noqa: F401  (importing registers the plugin)
