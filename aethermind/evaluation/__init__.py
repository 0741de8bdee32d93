"""How good is a model: guide prompts, validation loss, reasoning accuracy."""
