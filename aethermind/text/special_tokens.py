"""The 12 Forge-1 special-token strings, in id order: what the tokenizer and the template share.

A leaf (imports nothing): the tokenizer reserves ids 0-11 for them, and `chat_format` (the only
module that knows how a conversation is laid out with them) re-exports every name here.
"""

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SYSTEM, END_SYSTEM = "<|system|>", "<|/system|>"
USER, END_USER = "<|user|>", "<|/user|>"
ASSISTANT, END_ASSISTANT = "<|assistant|>", "<|/assistant|>"
THINK, END_THINK, NO_THINK = "<|think|>", "<|/think|>", "<|no_think|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, SYSTEM, END_SYSTEM, USER, END_USER, ASSISTANT, END_ASSISTANT,
                  THINK, END_THINK, NO_THINK)
