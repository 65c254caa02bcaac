"""Checkpoint converters: Mamba-2 / Gated DeltaNet / the authors' log-linear models -> hf-loglinear.

Installed as ``hf_loglinear.conversion``. ``convert(src, dst)`` is the entry point; ``FORMATS``
lists what it reads.
"""
from .converter import ConversionReport, convert
from .detect import FORMATS, UnknownFormatError

__all__ = ["FORMATS", "ConversionReport", "UnknownFormatError", "convert"]
