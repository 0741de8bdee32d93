"""Reinforcement learning with verifiable rewards (`aethermind rl`): GRPO on a trained model."""
