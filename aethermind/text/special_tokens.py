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

# The tags exported tokenizers mark as ordinary (non-special) added tokens: HF tokenizer.json
# "special": false, GGUF token type USER_DEFINED. Tools then keep them in decoded text
# (`decode(skip_special_tokens=True)`, llama.cpp's token_to_piece without `special`), so a
# client can split the thinking off (`thinking_split.split_thinking`), as Qwen3 does with its
# <think> tags; both still match as one token and never split into BPE pieces. <|no_think|>
# stays special: it carries no text, and an empty thinking already says the model skipped it.
# Our own tokenizer keeps all 12 special (its plain `encode` must never produce any of them).
VISIBLE_TOKENS = (THINK, END_THINK)
