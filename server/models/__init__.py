"""Models for the server: resolve.py turns a spec into a folder; embedded.py builds the embedded tiny
models (text_builder.py, vision_builder.py, tokenizers from bpe.py); `python -m server.models` is the CLI."""
