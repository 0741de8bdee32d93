"""What text looks like to the model: tokenizer, special tokens, chat format and template."""
