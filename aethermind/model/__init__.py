"""Forge-1's network: config, layers, attention masks, KV cache, losses, HF weight names."""
