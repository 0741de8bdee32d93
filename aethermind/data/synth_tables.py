"""Fixed word lists and facts behind the built-in reasoning data (`synth.py`); data only.

Kept apart so the generator reads as logic. Changing any table changes the generated data
(and so the test split), so treat edits like a dataset version bump.
Usage: `from aethermind.data import synth_tables as tables; tables.CAPITALS["France"]`.
"""

from __future__ import annotations

from decimal import Decimal

# country -> (capital, continent)
CAPITALS: dict[str, tuple[str, str]] = {
    "France": ("Paris", "Europe"), "Germany": ("Berlin", "Europe"), "Italy": ("Rome", "Europe"),
    "Spain": ("Madrid", "Europe"), "Portugal": ("Lisbon", "Europe"),
    "Greece": ("Athens", "Europe"), "Poland": ("Warsaw", "Europe"),
    "Austria": ("Vienna", "Europe"), "Sweden": ("Stockholm", "Europe"),
    "Norway": ("Oslo", "Europe"), "Finland": ("Helsinki", "Europe"),
    "Denmark": ("Copenhagen", "Europe"), "Ireland": ("Dublin", "Europe"),
    "Hungary": ("Budapest", "Europe"), "Belgium": ("Brussels", "Europe"),
    "Netherlands": ("Amsterdam", "Europe"), "Russia": ("Moscow", "Europe"),
    "Japan": ("Tokyo", "Asia"), "China": ("Beijing", "Asia"), "India": ("New Delhi", "Asia"),
    "Thailand": ("Bangkok", "Asia"), "Vietnam": ("Hanoi", "Asia"),
    "South Korea": ("Seoul", "Asia"), "Indonesia": ("Jakarta", "Asia"),
    "Egypt": ("Cairo", "Africa"), "Kenya": ("Nairobi", "Africa"),
    "Nigeria": ("Abuja", "Africa"), "Morocco": ("Rabat", "Africa"),
    "Ghana": ("Accra", "Africa"), "Ethiopia": ("Addis Ababa", "Africa"),
    "Canada": ("Ottawa", "North America"), "Mexico": ("Mexico City", "North America"),
    "Turkey": ("Ankara", "Asia"), "Cuba": ("Havana", "North America"),
    "Brazil": ("Brasilia", "South America"), "Argentina": ("Buenos Aires", "South America"),
    "Peru": ("Lima", "South America"), "Chile": ("Santiago", "South America"),
    "Australia": ("Canberra", "Oceania"), "New Zealand": ("Wellington", "Oceania"),
    "Switzerland": ("Bern", "Europe"), "Czechia": ("Prague", "Europe"),
    "Romania": ("Bucharest", "Europe"), "Bulgaria": ("Sofia", "Europe"),
    "Serbia": ("Belgrade", "Europe"), "Croatia": ("Zagreb", "Europe"),
    "Ukraine": ("Kyiv", "Europe"), "Iceland": ("Reykjavik", "Europe"),
    "Estonia": ("Tallinn", "Europe"), "Latvia": ("Riga", "Europe"),
    "Lithuania": ("Vilnius", "Europe"), "Slovakia": ("Bratislava", "Europe"),
    "Pakistan": ("Islamabad", "Asia"), "Bangladesh": ("Dhaka", "Asia"),
    "Nepal": ("Kathmandu", "Asia"), "Philippines": ("Manila", "Asia"),
    "Malaysia": ("Kuala Lumpur", "Asia"), "Iran": ("Tehran", "Asia"),
    "Iraq": ("Baghdad", "Asia"), "Israel": ("Jerusalem", "Asia"),
    "Jordan": ("Amman", "Asia"), "Saudi Arabia": ("Riyadh", "Asia"),
    "Mongolia": ("Ulaanbaatar", "Asia"), "Afghanistan": ("Kabul", "Asia"),
    "Senegal": ("Dakar", "Africa"), "Tunisia": ("Tunis", "Africa"),
    "Algeria": ("Algiers", "Africa"), "Uganda": ("Kampala", "Africa"),
    "Tanzania": ("Dodoma", "Africa"), "Zimbabwe": ("Harare", "Africa"),
    "Angola": ("Luanda", "Africa"), "Mali": ("Bamako", "Africa"),
    "Colombia": ("Bogota", "South America"), "Venezuela": ("Caracas", "South America"),
    "Ecuador": ("Quito", "South America"), "Uruguay": ("Montevideo", "South America"),
    "Paraguay": ("Asuncion", "South America"), "Bolivia": ("Sucre", "South America"),
    "Jamaica": ("Kingston", "North America"), "Panama": ("Panama City", "North America"),
    "Honduras": ("Tegucigalpa", "North America"), "Fiji": ("Suva", "Oceania"),
}
CAPITAL_PHRASINGS = ("What is the capital of {country}?", "Which city is the capital of {country}?",
                     "Name the capital of {country}.", "What's the capital of {country}?",
                     "Tell me the capital of {country}.", "What city is the capital of {country}?")

# unit name (as written in questions, plural) -> accepted answer spellings
UNITS: dict[str, tuple[str, ...]] = {
    "kilometers": ("kilometers", "kilometer", "km"), "meters": ("meters", "meter", "m"),
    "centimeters": ("centimeters", "centimeter", "cm"),
    "kilograms": ("kilograms", "kilogram", "kg"), "grams": ("grams", "gram", "g"),
    "hours": ("hours", "hour", "h", "hrs", "hr"), "minutes": ("minutes", "minute", "min"),
    "seconds": ("seconds", "second", "s", "sec"), "days": ("days", "day"),
    "feet": ("feet", "foot", "ft"), "inches": ("inches", "inch", "in"),
    "yards": ("yards", "yard", "yd"), "liters": ("liters", "liter", "l"),
    "milliliters": ("milliliters", "milliliter", "ml"), "dollars": ("dollars", "dollar"),
    "cents": ("cents", "cent"), "miles": ("miles", "mile", "mi"),
}
CONVERSIONS: dict[tuple[str, str], Decimal] = {
    ("kilometers", "meters"): Decimal(1000), ("meters", "centimeters"): Decimal(100),
    ("kilograms", "grams"): Decimal(1000), ("hours", "minutes"): Decimal(60),
    ("minutes", "seconds"): Decimal(60), ("days", "hours"): Decimal(24),
    ("feet", "inches"): Decimal(12), ("yards", "feet"): Decimal(3),
    ("liters", "milliliters"): Decimal(1000), ("dollars", "cents"): Decimal(100),
}

VEHICLES = ("train", "car", "bus", "bike", "truck", "boat", "plane", "ship", "van", "scooter",
            "tractor", "motorbike")
ITEMS = (("apple", "apples"), ("book", "books"), ("pen", "pens"), ("ticket", "tickets"),
         ("cookie", "cookies"), ("notebook", "notebooks"), ("candle", "candles"),
         ("shirt", "shirts"), ("lemon", "lemons"), ("toy", "toys"), ("pencil", "pencils"),
         ("marble", "marbles"), ("stamp", "stamps"), ("card", "cards"), ("flower", "flowers"),
         ("egg", "eggs"), ("orange", "oranges"), ("cupcake", "cupcakes"), ("sticker", "stickers"),
         ("coin", "coins"), ("bottle", "bottles"), ("sock", "socks"), ("hat", "hats"),
         ("ball", "balls"), ("cup", "cups"), ("plate", "plates"), ("brick", "bricks"),
         ("button", "buttons"), ("crayon", "crayons"), ("shell", "shells"), ("rock", "rocks"),
         ("kite", "kites"), ("bead", "beads"), ("carrot", "carrots"), ("banana", "bananas"),
         ("muffin", "muffins"), ("chair", "chairs"), ("box", "boxes"), ("key", "keys"),
         ("ring", "rings"))

# Chit-chat with one fixed reply each (no think block): questions as generated.
_GREETING = "Hello! How can I help you today?"
_MORNING, _EVENING = (f"Good {t}! How can I help you today?" for t in ("morning", "evening"))
# Every reply that greets back: a greeting answered by any of them is answered well.
GREETING_REPLIES = (_GREETING, _MORNING, _EVENING)
_IDENTITY = "I am Forge-1, a helpful thinking AI assistant."
_THANKS = "You're welcome! Let me know if you need anything else."
_BYE = "Goodbye! Have a great day!"
_ABILITIES = ("I can do arithmetic, compare and sort numbers, count letters, convert units, "
              "solve rate and word problems and name capitals.")
CHAT_REPLIES: dict[str, str] = {
    "Hello!": _GREETING, "Hi!": _GREETING, "Hi there!": _GREETING, "Hey!": _GREETING,
    "Good morning!": _MORNING, "Good evening!": _EVENING,
    "Hello, how are you?": "I'm doing well, thank you! How can I help you today?",
    "How are you?": "I'm doing well, thank you! How can I help you today?",
    "Who are you?": _IDENTITY, "What is your name?": _IDENTITY, "What are you?": _IDENTITY,
    "Hello! Who are you?": _IDENTITY, "Hi! What is your name?": _IDENTITY,
    "Hi there! Who are you?": _IDENTITY,
    "Introduce yourself.": _IDENTITY,
    "Thank you!": _THANKS, "Thanks!": _THANKS, "Thanks a lot!": _THANKS,
    "Thank you for your help.": _THANKS,
    "Goodbye!": _BYE, "Bye!": _BYE, "See you later!": _BYE,
    "Can you think step by step?": "Yes. I think step by step before I answer hard questions.",
    "What can you do?": _ABILITIES,
}
# The reply of each chat intent of the phrasing grammar (`synth_grammar.CHAT_INTENTS`).
INTENT_REPLIES: dict[str, str] = {
    "greeting": _GREETING, "identity": _IDENTITY,
    "how": "I'm doing well, thank you! How can I help you today?", "thanks": _THANKS,
    "bye": _BYE, "abilities": _ABILITIES}
# An honest answer to anything outside every family (issue 18: not another family's answer).
OUT_OF_SCOPE = ("Sorry, I can't help with that. I can only do arithmetic, compare and sort "
                "numbers, count letters, convert units, solve rate and word problems, and name "
                "capitals.")
# Fillers of the out-of-scope questions ("other" in `synth_grammar.PHRASINGS`).
OFF_TOPIC_SLOTS: dict[str, tuple[str, ...]] = {
    "topic": ("programming", "the sea", "cats", "dogs", "winter", "friendship", "the moon",
              "coffee", "music", "trains", "robots", "autumn", "love", "the city", "mountains"),
    "city": ("London", "Paris", "Tokyo", "New York", "Sydney", "Berlin", "Chicago", "Madrid"),
    "book": ("Hamlet", "Don Quixote", "War and Peace", "Pride and Prejudice", "Moby Dick",
             "The Odyssey"),
    "phrase": ("good morning", "thank you", "I love you", "where is the station",
               "hello friend"),
    "language": ("French", "Spanish", "German", "Japanese", "Italian", "Chinese"),
    "food": ("rice", "pasta", "pancakes", "soup", "an omelette", "bread", "curry"),
    "fake": ("Atlantis", "Narnia", "Wakanda", "Elbonia", "Freedonia", "Genovia"),
    "science": ("gravity", "photosynthesis", "black holes", "quantum physics", "evolution",
                "electricity", "the internet"),
    "chore": ("fix my car", "file my taxes", "write a resume", "learn French",
              "reverse a string", "build a website", "train a dog", "bake a cake"),
    "invention": ("the telephone", "the light bulb", "the airplane", "the radio",
                  "the computer"),
}
NAMES = ("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
         "Karen", "Liam", "Maria", "Noah", "Olivia", "Peter", "Quinn", "Rosa", "Sam", "Tina",
         "Umar", "Vera", "Will", "Xena", "Yusuf", "Zoe", "Aria", "Ben", "Chloe", "Dev", "Amir",
         "Hana", "Kofi", "Lucia", "Mei", "Nikos", "Omar", "Priya", "Ravi", "Sofia", "Tomas",
         "Yuki", "Ines", "Jonas", "Leila", "Mateo", "Nia", "Oscar", "Paula", "Rhea")
WORDS = ("strawberry", "banana", "apple", "letter", "mississippi", "balloon", "coffee",
         "committee", "bookkeeper", "pepper", "butter", "garden", "rabbit", "summer", "window",
         "elephant", "giraffe", "umbrella", "bottle", "kitten", "puzzle", "address", "success",
         "tomato", "potato", "carrot", "orange", "cherry", "lemon", "melon", "river", "forest",
         "mountain", "valley", "ocean", "island", "planet", "rocket", "engine", "hammer",
         "pillow", "blanket", "mirror", "ladder", "pencil", "paper", "school", "teacher",
         "student", "doctor", "market", "bridge", "castle", "dragon", "wizard", "sunny",
         "happy", "silly", "little", "middle", "bubble", "jelly", "cookie", "muffin", "noodle",
         "parrot", "turtle", "monkey", "zebra", "tiger", "spoon", "table", "chair", "green",
         "yellow", "purple", "seven", "eleven", "hello", "banner", "cotton", "tunnel")
# Kept short on purpose: a word is one token, so spelling it is a fact to memorise; with 200
# words count fell from 88% to 57% on held-out phrasings in one demo run (issue 18).
