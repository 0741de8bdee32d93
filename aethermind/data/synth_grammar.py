"""The phrasing grammar of the built-in reasoning data: every family asked the ways people ask.

One template both writes a question (`str.format` with the slot values) and reads it back
(`pattern`: each `{slot}` becomes a named group, a repeated slot a back-reference), so the
generator and the solver in `synth.py` can never disagree on a phrasing. Templates marked
`~` are held out: never trained, asked only by the "phrasing" split, so its accuracy measures
understanding of the question rather than recall of its template (issue 18). Held-out
templates recombine words the trained ones of their group use ("plus", "take away",
"product") in frames the model never saw: every word of a held-out template is in some
trained one of its group (a test checks it). Any question may also get a polite prefix or
suffix and lose its case or final punctuation (`decorate`), in every split alike, so no
held-out template may be a trained one with a prefix ("Please add ..." is "Add ..." decorated).
Usage: `templates("add", held_out=False)`; `pattern("Add {a} and {b}.").fullmatch(q)`.
"""

from __future__ import annotations

import functools
import random
import re

from aethermind.data import synth_tables as tables

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty")
COMPARATIVE_MAX = ("larger", "bigger", "greater", "higher", "more")
COMPARATIVE_MIN = ("smaller", "lower", "less")
SUPERLATIVE_MAX = ("largest", "biggest", "greatest", "highest", "maximum")
SUPERLATIVE_MIN = ("smallest", "lowest", "least", "minimum")
ASCENDING = ("from smallest to largest", "in ascending order", "from lowest to highest",
             "in increasing order", "smallest first", "from least to greatest")
DESCENDING = ("from largest to smallest", "in descending order", "from highest to lowest",
              "in decreasing order", "largest first", "biggest first", "from greatest to least")
# Verb forms of the word problems: bare (I ...), third person (Sam ...), past (Sam had ...).
GAIN = {"gain1": ("buy", "get", "find", "receive", "win", "collect", "pick", "make"),
        "gain3": ("buys", "gets", "finds", "receives", "wins", "collects", "picks", "makes"),
        "gainp": ("bought", "got", "found", "received", "won", "collected", "picked", "made")}
LOSE = {"lose1": ("eat", "give away", "lose", "sell", "use", "drop", "break"),
        "lose3": ("eats", "gives away", "loses", "sells", "uses", "drops", "breaks"),
        "losep": ("ate", "gave away", "lost", "sold", "used", "dropped", "broke"),
        # things that go by themselves: "3 of them rolled away"
        "gone": ("rolled away", "fell off", "broke", "got lost", "were sold", "were taken",
                 "went missing")}
MPH = ("mph", "miles per hour", "miles an hour")
PREFIXES = ("Please ", "Hey, ", "Quick question: ", "Can you tell me: ", "Help me: ")
SUFFIXES = (" please", " thanks", " thank you")

_NUM = r"\d+(?:\.\d+)?|" + "|".join(NUMBER_WORDS)


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# slot -> regex; a slot not listed here is a number (digits, a decimal or a number word).
SLOTS: dict[str, str] = {
    "list": r"\d+(?:(?: ?, ?(?:and )?| and | )\d+)+",
    "cmp": _alt(COMPARATIVE_MAX + COMPARATIVE_MIN), "sup": _alt(SUPERLATIVE_MAX + SUPERLATIVE_MIN),
    "asc": _alt(ASCENDING), "desc": _alt(DESCENDING), "mph": _alt(MPH),
    "letter": "[a-z]", "word": "[a-z]+", "words": "[a-z]+(?: [a-z]+)*",
    "country": _alt(tables.CAPITALS), "name": "[A-Z][a-z]+", "item": "[a-z]+",
    "items": "[a-z]+", "vehicle": "[a-z]+", "hrs": "hours?",
    "src": _alt(tables.UNITS), "dst": _alt(tables.UNITS),
    **{k: _alt(v) for k, v in (GAIN | LOSE).items()},
    **{k: _alt(v) for k, v in tables.OFF_TOPIC_SLOTS.items()},
}

# Per family: "~" marks a held-out phrasing. Each family's first templates are the guide's.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "add": (
        "What is {a} + {b}?", "Calculate {a} + {b}.", "{a} + {b} = ?", "{a}+{b}", "{a} + {b}",
        "What is {a} plus {b}?", "What's {a} plus {b}?", "{a} plus {b}?",
        "How much is {a} plus {b}?", "Add {a} and {b}.", "Add {b} to {a}.",
        "Can you add {a} and {b}?", "What is the sum of {a} and {b}?",
        "Find the sum of {a} and {b}.", "Sum of {a} and {b}?",
        "What do you get when you add {a} and {b}?", "Compute {a} + {b}.",
        "Work out {a} plus {b}.", "What is the total of {a} and {b}?",
        "If you add {a} and {b}, what do you get?", "Tell me {a} + {b}.", "Solve {a} + {b}.",
        "What does {a} + {b} equal?", "How much do {a} and {b} make together?",
        "Could you work out {a} plus {b} for me?", "What is {a} added to {b}?",
        "Sum up {a} and {b}.",
        "~Add together {a} and {b}.", "~Could you add {a} and {b} for me?",
        "~What is {a} and {b} added together?", "~Find the total of {a} and {b}.",
        "~Add up {a} and {b}.", "~What does {a} plus {b} equal?",
        "~What's the sum of {a} and {b}?", "~{a} plus {b} is?"),
    "sub": (
        "What is {a} - {b}?", "Calculate {a} - {b}.", "{a} - {b} = ?", "{a}-{b}", "{a} - {b}",
        "What is {a} minus {b}?", "What's {a} minus {b}?", "{a} minus {b}?",
        "How much is {a} minus {b}?", "Subtract {b} from {a}.", "What is {a} take away {b}?",
        "{a} take away {b}", "Take {b} away from {a}.",
        "What do you get if you subtract {b} from {a}?", "What is {b} less than {a}?",
        "Find the difference between {x} and {y}.", "What is the difference between {x} and {y}?",
        "Compute {a} - {b}.", "Work out {a} minus {b}.", "Solve {a} - {b}.",
        "What does {a} - {b} equal?", "How much is left if you take {b} from {a}?",
        "Could you work out {a} minus {b}?", "What is the result of {a} minus {b}?",
        "What is left when {b} is taken from {a}?",
        "~How much is {a} take away {b}?", "~Could you subtract {b} from {a}?",
        "~What is the difference of {x} and {y}?", "~{a} minus {b} is?",
        "~Take away {b} from {a}.", "~What's left when you subtract {b} from {a}?",
        "~Find {a} minus {b}."),
    "mul": (
        "What is {a} * {b}?", "Calculate {a} * {b}.", "What is {a} x {b}?", "{a} * {b} = ?",
        "{a}*{b}", "{a} x {b}", "What is {a} times {b}?", "What's {a} times {b}?",
        "{a} times {b}?", "How much is {a} times {b}?", "Multiply {a} by {b}.",
        "Multiply {a} and {b}.", "What is {a} multiplied by {b}?",
        "What is the product of {a} and {b}?", "Compute {a} * {b}.", "Work out {a} times {b}.",
        "What do you get when you multiply {a} by {b}?", "Solve {a} x {b}.",
        "What does {a} times {b} equal?", "Find the result of {a} * {b}.",
        "Could you work out {a} times {b}?",
        "Multiply {a} and {b} together.", "Tell me {a} * {b}.",
        "~Find the product of {a} and {b}.", "~Could you multiply {a} and {b}?",
        "~{a} multiplied by {b} is?", "~How much is {a} multiplied by {b}?",
        "~Multiply together {a} and {b}.", "~Tell me the product of {a} and {b}."),
    "compare": (
        "Which is {cmp}, {a} or {b}?", "Which number is {cmp}, {a} or {b}?",
        "Which is {cmp}: {a} or {b}?", "Is {a} or {b} {cmp}?", "Which of {a} and {b} is {cmp}?",
        "What is the {sup} of {a} and {b}?", "Which is the {sup} number, {a} or {b}?",
        "Pick the {sup} number: {a} or {b}.", "{a} or {b}: which is {cmp}?",
        "Tell me which is {cmp}, {a} or {b}.", "Compare {a} and {b}. Which is {cmp}?",
        "Between {a} and {b}, which is {cmp}?", "Which one is {cmp}, {a} or {b}?",
        "Which is {sup}: {a} or {b}?",
        "~Is {a} or {b} the {cmp} number?", "~Of {a} and {b}, which is {cmp}?",
        "~Which number is {sup}, {a} or {b}?", "~Tell me the {sup} of {a} and {b}.",
        "~Which is the {cmp} number, {a} or {b}?"),
    "sort": (
        "Sort these numbers: {list}", "Sort these numbers {asc}: {list}",
        "Sort these numbers {desc}: {list}", "Sort {list}", "Sort {list} {asc}.",
        "Sort {list} {desc}.", "Sort the numbers {list} {asc}.", "Sort the numbers {list} {desc}.",
        "Sort the following numbers: {list}", "Put these numbers in order: {list}",
        "Put {list} in order.", "Order these numbers {asc}: {list}", "Arrange {list} {desc}.",
        "Arrange these numbers {asc}: {list}", "Can you sort {list}?", "Please sort: {list}",
        "List {list} {asc}.", "Rank these numbers {desc}: {list}", "Sort this list: {list}",
        "Sort {asc}: {list}", "Could you sort {list}?", "Rearrange these numbers {desc}: {list}",
        "I want these numbers sorted {asc}: {list}", "I need {list} put in order.",
        "~Could you put these numbers in order {desc}: {list}", "~Arrange these numbers: {list}",
        "~Order {list} {asc}.", "~Sort the list {list}", "~Rearrange {list} {asc}.",
        "~I need these sorted {desc}: {list}"),
    "count": (
        'How many times does the letter "{letter}" appear in "{word}"?',
        "How many times does the letter {letter} appear in {word}?",
        "How many {letter}'s are in {word}?", "How many {letter}s are in the word {word}?",
        "Count the letter {letter} in {word}.", 'Count the "{letter}" in "{word}".',
        "How many times does {letter} occur in {word}?",
        "In the word {word}, how many times does {letter} appear?",
        "How often does the letter {letter} appear in {word}?",
        "Count how many times {letter} appears in {word}.",
        'How many "{letter}" are in "{word}"?', "How many {letter} are in {word}?",
        "How many times does '{letter}' appear in '{word}'?", "Count the {letter}'s in '{word}'.",
        "How many times is the letter {letter} used in {word}?",
        "How many times does {word} have the letter {letter}?",
        "Tell me how often {letter} appears in {word}.",
        "How many times does {letter} show up in the word {word}?",
        "~How many times is the letter {letter} in the word {word}?",
        "~How many {letter}'s does the word {word} have?",
        "~In {word}, how many times does the letter {letter} occur?",
        "~How often does {letter} show up in {word}?",
        "~Tell me how many {letter}s are in {word}."),
    "convert": (
        "Convert {x} {src} to {dst}.", "Convert {x} {src} into {dst}.",
        "How many {dst} are in {x} {src}?", "How many {dst} is {x} {src}?",
        "What is {x} {src} in {dst}?", "{x} {src} is how many {dst}?", "{x} {src} in {dst}?",
        "Change {x} {src} to {dst}.", "Express {x} {src} in {dst}.",
        "{x} {src} equals how many {dst}?", "Turn {x} {src} into {dst}.",
        "What is {x} {src} converted to {dst}?", "What's {x} {src} converted to {dst}?",
        "There are {x} {src}. How many {dst} is that?", "I need to convert {x} {src} to {dst}.",
        "Can you change {x} {src} into {dst}?",
        "~How many {dst} are there in {x} {src}?", "~I need {x} {src} in {dst}.",
        "~What's {x} {src} in {dst}?", "~{x} {src} to {dst}?",
        "~Can you convert {x} {src} into {dst}?"),
    "distance": (
        "If a {vehicle} travels at {speed} {mph} for {hours} {hrs}, how far does it go?",
        "A {vehicle} travels at {speed} {mph} for {hours} {hrs}. How far does it travel?",
        "A {vehicle} goes {speed} {mph} for {hours} {hrs}. How far does it go?",
        "How far does a {vehicle} go in {hours} {hrs} at {speed} {mph}?",
        "How many miles does a {vehicle} cover in {hours} {hrs} at {speed} {mph}?",
        "A {vehicle} drives at {speed} {mph} for {hours} {hrs}. How many miles is that?",
        "At {speed} {mph}, how far does a {vehicle} travel in {hours} {hrs}?",
        "A {vehicle} is going {speed} {mph}. How far does it go in {hours} {hrs}?",
        "What distance does a {vehicle} cover at {speed} {mph} in {hours} {hrs}?",
        "How far can a {vehicle} get in {hours} {hrs} going {speed} {mph}?",
        "{speed} {mph} for {hours} {hrs}: how many miles?",
        "If a {vehicle} keeps {speed} {mph} for {hours} {hrs}, what distance does it cover?",
        "A {vehicle} runs {hours} {hrs} at {speed} {mph}. What distance is that?",
        "A {vehicle} moves {hours} {hrs} at {speed} {mph}. How many miles is that?",
        "How many miles will a {vehicle} go in {hours} {hrs} at {speed} {mph}?",
        "~A {vehicle} moves at {speed} {mph} for {hours} {hrs}. How far does it go?",
        "~How far will a {vehicle} travel in {hours} {hrs} at {speed} {mph}?",
        "~Going {speed} {mph} for {hours} {hrs}, how far does a {vehicle} get?"),
    "duration": (
        "How long does it take a {vehicle} to travel {dist} miles at {speed} {mph}?",
        "A {vehicle} travels {dist} miles at {speed} {mph}. How long does it take?",
        "How many hours does a {vehicle} need to go {dist} miles at {speed} {mph}?",
        "At {speed} {mph}, how long does a {vehicle} take to travel {dist} miles?",
        "A {vehicle} going {speed} {mph} has to travel {dist} miles. How many hours does it take?",
        "How many hours will a {vehicle} take to go {dist} miles at {speed} {mph}?",
        "How much time does a {vehicle} need for {dist} miles at {speed} {mph}?",
        "A {vehicle} must cover {dist} miles at {speed} {mph}. How long will that take?",
        "At {speed} {mph}, how many hours does a trip of {dist} miles take?",
        "{dist} miles at {speed} {mph}: how many hours?",
        "If a {vehicle} drives {dist} miles at {speed} {mph}, how long is the trip?",
        "A {vehicle} needs to travel {dist} miles at {speed} {mph}. How long will it take?",
        "~How long will a {vehicle} take to cover {dist} miles at {speed} {mph}?",
        "~A {vehicle} needs to go {dist} miles at {speed} {mph}. How many hours is that?"),
    "cost": (
        "One {item} costs {price} dollars. How much do {count} {items} cost?",
        "A {item} costs {price} dollars. How much do {count} {items} cost?",
        "If one {item} costs {price} dollars, how much do {count} {items} cost?",
        "Each {item} costs {price} dollars. What do {count} {items} cost?",
        "How much do {count} {items} cost at {price} dollars each?",
        "What is the price of {count} {items} if one costs {price} dollars?",
        "One {item} costs ${price}. How much do {count} {items} cost?",
        "How much do {count} {items} cost at ${price} each?",
        "{items} are ${price} each. How much for {count}?",
        "What is the total cost of {count} {items} at {price} dollars each?",
        "{count} {items} at {price} dollars each: how much in all?",
        "Every {item} sells for {price} dollars. What do {count} {items} cost?",
        "I want {count} {items}, and one costs {price} dollars. What is the total?",
        "How much do {count} {items} cost at ${price} apiece?",
        "If I buy {count} {items} at {price} dollars each, what do I pay?",
        "How much are {count} {items} when each costs {price} dollars?",
        "~What do {count} {items} cost at ${price} apiece?",
        "~If each {item} is {price} dollars, how much are {count} {items}?",
        "~I buy {count} {items} at {price} dollars each. How much do I pay?",
        "~What do {count} {items} cost when one {item} costs {price} dollars?"),
    "word": (
        "I have {a} {items} and {lose1} {b}. How many {items} are left?",
        "I have {a} {items} and {gain1} {b} more. How many {items} do I have now?",
        "{name} has {a} {items} and {lose3} {b}. How many {items} are left?",
        "{name} has {a} {items} and {gain3} {b} more. How many {items} does {name} have now?",
        "{name} had {a} {items} and {losep} {b}. How many {items} does {name} have left?",
        "{name} had {a} {items}. {name} {losep} {b} of them. How many are left?",
        "{name} had {a} {items} and {gainp} {b} more. How many {items} does {name} have now?",
        "There are {a} {items}. {name} {losep} {b}. How many {items} are left?",
        "I had {a} {items}, then I {gainp} {b} more. How many {items} do I have?",
        "{name} starts with {a} {items} and {lose3} {b}. How many {items} remain?",
        "If I have {a} {items} and {lose1} {b}, how many are left?",
        "{name} has {a} {items}. Then {name} {gain3} {b} more. How many {items} now?",
        "There were {a} {items}. Then {b} of them {gone}. How many {items} are left?",
        "{name} had {a} {items}, but {b} of them {gone}. How many {items} does {name} have now?",
        "A box holds {a} {items}. {name} {gainp} {b} more and put them in. How many {items} are in "
        "the box now?",
        "{name} {gainp} {a} {items} and then {b} more. How many {items} is that in total?",
        "{name} had {a} {items}. After {name} {losep} {b}, how many {items} were left?",
        "{name} owns {a} {items} and {gain3} {b} more. How many {items} altogether?",
        "I had {a} {items}. I {losep} {b} of them. How many {items} remain?",
        "After {name} {gainp} {b} more {items}, how many does {name} have if {name} had {a}?",
        "{name} kept {a} {items} in a bag and {losep} {b}. How many {items} are in the bag now?",
        "There were {a} {items} on the table. {name} {gainp} {b} more. How many {items} are on "
        "the table now?",
        "{name} had {a} {items} and {losep} {b}. How many {items} does {name} still have?",
        "{name} had {a} {items}, and {b} of them {gone}. What number of {items} is left?",
        "~{name} had {a} {items} and {losep} {b}. How many {items} does {name} have?",
        "~{a} {items} were on the table and {b} of them {gone}. How many {items} are still there?",
        "~{name} has {a} {items}, then {gainp} {b} more. What is the total number of {items}?",
        "~I have {a} {items}. I {lose1} {b}. How many {items} do I have left?",
        "~{name} has {a} {items}. {name} {gain3} {b} more. How many {items} does {name} have?",
        "~There were {a} {items} and {name} {losep} {b}. How many {items} are left now?"),
    "capital": (*tables.CAPITAL_PHRASINGS,
                "Capital of {country}?", "What's the capital city of {country}?",
                "What is {country}'s capital?", "Which city is {country}'s capital?",
                "Do you know the capital of {country}?", "Tell me {country}'s capital.",
                "Name {country}'s capital city.", "Can you name the capital of {country}?",
                "~What is the capital city of {country}?",
                "~Can you tell me the capital of {country}?",
                "~{country}'s capital?", "~What city is {country}'s capital?"),
    "name": ("Hi, my name is {name}.", "Hello! I am {name}.", "Hello, I'm {name}.",
             "Hi! My name is {name}.", "Hi, I am {name}.", "My name is {name}.", "I'm {name}.",
             "Hey, I'm {name}!", "Call me {name}.", "My name's {name}.", "I am {name}.",
             "Good morning, I'm {name}.", "Nice to meet you, I'm {name}.", "Hi, {name} here.",
             "{name} here, hello!", "This is {name}.", "Hello there, I am {name}.",
             "~Hello, my name is {name}.", "~Hey! My name is {name}.", "~Hi there, I'm {name}."),
    "repeat": ("Repeat after me: {words}", "Say this: {words}", "Please repeat: {words}",
               "Repeat this: {words}", "Echo: {words}", "Say after me: {words}",
               "Repeat these words: {words}", "Please say: {words}", "Copy this: {words}",
               "Say it back: {words}", "Could you say this: {words}", "Just repeat: {words}",
               "Say these words: {words}", "Repeat exactly: {words}", "Say back to me: {words}",
               "Can you say this: {words}",
               "~Repeat after me please: {words}", "~Can you repeat this: {words}"),
    "other": (
        "Write a haiku about {topic}.", "Write a poem about {topic}.",
        "Tell me a joke about {topic}.", "Tell me a story about {topic}.",
        "What is the weather like in {city}?", "Will it rain tomorrow in {city}?",
        "Who wrote {book}?", "Translate {phrase} into {language}.", "How do I cook {food}?",
        "Give me a recipe for {food}.", "What is the square root of {a}?",
        "What is {a} divided by {b}?", "What is {a} to the power of {b}?",
        "What is the capital of {fake}?", "Who is the president of {country}?",
        "Explain {science}.", "What time is it in {city}?", "Write code to {chore}.",
        "Can you help me {chore}?", "What is the population of {country}?",
        "Sing a song about {topic}.", "Is it sunny today in {city}?",
        "What's the population of {country}?", "When was {invention} invented?",
        "Can you divide {a} by {b}?", "How much is {a} divided by {b}?", "What is {a} / {b}?",
        "Share a fact about {topic}.", "Say something fun about {topic}.",
        "~Write a song about {topic}.", "~What's the weather in {city} today?",
        "~Who invented {invention}?", "~Divide {a} by {b}.", "~Can you explain {science}?",
        "~How do I {chore}?", "~Tell me a fun fact about {topic}."),
}
# Chat intents: fixed phrasings (the table's own questions are the trained ones) and a reply.
CHAT_INTENTS: dict[str, tuple[str, ...]] = {
    "greeting": ("Hey there!", "Hello there!", "Greetings!", "Howdy!", "Hiya!",
                 "Good day!", "Hello, friend!", "Hi, friend!", "~Hey, hello!", "~Hi, hello there!"),
    "identity": ("What's your name?", "Tell me about yourself.", "Who am I talking to?",
                 "What should I call you?", "What kind of assistant are you?",
                 "What are you called?", "Who am I chatting with?", "Do you have a name?",
                 "Tell me who you are.",
                 "~Hey, who are you?", "~Hi, what's your name?", "~Who is this?",
                 "~Can you introduce yourself?"),
    "how": ("How are you doing?", "How's it going?", "How are you today?",
            "How have you been?", "How do you feel today?", "How are things?",
            "~Hi, how are you doing?", "~Hey, how's it going?"),
    "thanks": ("Thank you so much!", "Thanks for the help!", "Much appreciated!",
               "Thanks a bunch!", "Thank you kindly!", "I appreciate it!",
               "~Thanks so much!", "~Thank you very much!", "~Thanks for your help!"),
    "bye": ("Bye bye!", "See you!", "Good night!", "Talk to you later!",
            "Farewell!", "Catch you later!", "Have a nice day!",
            "~Goodbye, see you later!", "~Bye for now!", "~See you soon!"),
    "abilities": ("What can you help with?", "What are you good at?",
                  "What do you do?", "How can you help me?", "What are your skills?",
                  "~What can you help me with?", "~What are you able to do?"),
}
# Family of each template group: rate is three kinds of question, chat three kinds of message.
GROUP_TASK = {"distance": "rate", "duration": "rate", "cost": "rate", "name": "chat",
              "repeat": "chat"}


def held_out(template: str) -> bool:
    return template.startswith("~")


def templates(group: str, held: bool) -> tuple[str, ...]:
    """The trained (`held=False`) or held-out phrasings of one template group, unmarked."""
    return tuple(t.lstrip("~") for t in PHRASINGS[group] if held_out(t) == held)


_OPERATOR = re.compile(r"(?<=[\w}]) *([+*=-]) *")


def space_operators(text: str) -> str:
    """"2+2", "2 +2" and "2 + 2" (and a template's "{a}+{b}") all read as "2 + 2"."""
    return _OPERATOR.sub(lambda m: f" {m.group(1)} ", text).strip()


@functools.cache
def pattern(template: str) -> re.Pattern:
    """The template as a whole-question regex: slots become named groups (a repeat of a slot
    a back-reference), the final punctuation is optional, and a polite prefix or suffix may
    come around it (see `decorate`)."""
    out, seen = [], set()
    body = space_operators(template.rstrip("?.!").rstrip())
    pieces = re.split(r"\{(\w+)\}", body)
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            text = re.escape(piece)
            if i + 1 < len(pieces) and pieces[i + 1] == "mph" and text.endswith("\\ "):
                text = text[:-2] + " ?"  # "60mph" as often as "60 mph"
            out.append(text)
        elif piece in seen:
            out.append(f"(?P={piece})")
        else:
            seen.add(piece)
            out.append(f"(?P<{piece}>{SLOTS.get(piece, _NUM)})")
    prefix = "(?:" + _alt(p.strip(" ,:") for p in PREFIXES) + ")[,:]? "
    suffix = "(?:,?(?:" + _alt(SUFFIXES) + "))"
    return re.compile(f"(?:{prefix})?{''.join(out)}{suffix}? ?[?.!]*", re.IGNORECASE)


def decorate(question: str, rng: random.Random) -> str:
    """The surface noise of typed questions, in every split: a polite prefix or suffix, a
    lower-case start, no final punctuation. `pattern` reads all of them back."""
    if rng.random() < 0.15:
        question = rng.choice(PREFIXES) + question[0].lower() + question[1:]
    if rng.random() < 0.1:
        end = len(question.rstrip("?.!"))
        question = question[:end] + rng.choice(SUFFIXES) + question[end:]
    if rng.random() < 0.2:
        question = question[0].lower() + question[1:]
    if rng.random() < 0.15:
        question = question.rstrip("?.!")
    return question
