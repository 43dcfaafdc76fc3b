"""Decoder variants: stream messages → rows (tuples in ``pipeline.rows.COLUMNS`` order).

One file per variant, one line per variant in ``DECODERS``.
"""

from pipeline.decoders.base import DecodeError, Decoder
from pipeline.decoders.dict import DictDecoder
from pipeline.decoders.direct import DirectDecoder
from pipeline.registry import Registry

DECODERS: Registry[type[Decoder]] = Registry(
    "decoder",
    {
        "dict": DictDecoder,  # seed: MessageToDict then remap
        "direct": DirectDecoder,  # field reads straight into the tuple
    },
)

__all__ = ["DECODERS", "DecodeError", "Decoder"]
