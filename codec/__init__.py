"""A neural audio codec: SEANet encoder/decoder around a residual vector quantizer."""
from codec.checkpoint import CheckpointError
from codec.model import Codec, CodecConfig, CodecOutput
from codec.api import ModelMismatchError, Tokens, decode_file, encode_file, read_header, read_tokens, write_tokens
from codec.streaming import decode_chunked, encode_chunked
from codec.tokenfile import TokenFileError, TokenHeader

__all__ = ["Codec", "CodecConfig", "CodecOutput", "CheckpointError", "load",
           "encode_file", "decode_file", "read_tokens", "write_tokens", "read_header", "Tokens",
           "TokenHeader", "TokenFileError", "ModelMismatchError", "encode_chunked", "decode_chunked"]
__version__ = "0.1.0"


def load(name_or_path="speech16k", map_location: str = "cpu") -> Codec:
    """A bundled model by name (e.g. "speech16k") or a model directory / .safetensors path."""
    from codec.checkpoint import load_model
    from codec.pretrained import resolve
    return load_model(resolve(name_or_path), map_location)
