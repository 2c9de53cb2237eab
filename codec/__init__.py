"""A trained checkpoint as a video codec: entropy-coded bitstreams and rate-distortion.

``compress()`` / ``decompress()`` are the face of a model (as in CompressAI); the
command line is ``python -m codec compress | decompress | info | evaluate | fit-prior``.
"""
from codec.bitstream import CodecError, Header
from codec.codec import CodecModel, compress, decompress, load_codec_model

__all__ = ["CodecError", "CodecModel", "Header", "compress", "decompress", "load_codec_model"]
