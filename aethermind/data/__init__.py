"""Data pipeline: download, preprocess, built-in reasoning data (synth), token shards, loader."""
