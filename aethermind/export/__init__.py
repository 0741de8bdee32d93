"""Forge-1 in other formats: .pt, safetensors, a Hugging Face folder, GGUF."""
