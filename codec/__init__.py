"""A trained checkpoint as a video codec: entropy-coded bitstreams and rate-distortion.

``compress()`` / ``decompress()`` code a model's indices (the model's ``encode_clips`` /
``decode_clips`` and its code prior are the codec's face, as in CompressAI); the command line is
``python -m codec compress | decompress | info | cut | evaluate | fit-prior``.
"""
from codec.bitstream import CodecError, Header
from codec.codec import CodecModel, compress, decompress, load_codec_model

__all__ = ["CodecError", "CodecModel", "Header", "compress", "decompress", "load_codec_model"]
