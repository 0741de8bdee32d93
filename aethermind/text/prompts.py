"""The guide's test prompts (docs/guide.md, "Run Evaluation Suite"), defined once.

`evaluate` runs TEST_PROMPTS (the guide's five, then three more), the demo chats with a few of
them, and the built-in data pins the ones with a checkable answer into training so a small
model has seen them. A leaf: plain strings, no imports.
"""

ARITHMETIC = "What is 15 * 23?"
WORD_PROBLEM = "If a train travels at 60 mph for 2.5 hours, how far does it go?"
CREATIVE = "Write a haiku about programming."
FACTUAL = "What is the capital of France?"
SORTING = "Sort these numbers: 5, 2, 8, 1, 9"
GREETING = "Hello! Who are you?"

GUIDE_PROMPTS = (ARITHMETIC, WORD_PROBLEM, CREATIVE, FACTUAL, SORTING)  # the guide's order
# Three more: small arithmetic, a subtraction word problem, a plain greeting.
TEST_PROMPTS = (*GUIDE_PROMPTS, "What is 7 + 8?",
                "I have 3 apples and eat one. How many apples are left?", GREETING)
