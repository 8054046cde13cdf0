"""The ssvcodec codec: quantization, entropy coding, the bitstream container and the API."""
