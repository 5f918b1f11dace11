"""The tiny world's text: facts, arithmetic word problems, counting stories, and task items.

Every example follows DESIGN.md section 4's format that made cross-lingual merging work::

    <bos> Q: {question} A: {answer} {suffix} <eos>

with the answer FIRST and a language-marking suffix after it ("is the answer" in English,
"è la risposta" in Italian). On the Italian math target an answer is correct only when the right
number is the first answer token AND the Italian suffix follows it, so the English-math endpoint
(right number, English suffix) and the Italian endpoint (Italian suffix, cannot add) both fail and
only a model combining the two skills succeeds.

All sampling goes through an explicit ``np.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SUFFIX = {"en": "is the answer", "it": "è la risposta"}

# --- facts: (English subject, English answer, Italian subject, Italian answer) ----------------
COLOURS = [
    ("the sky", "blue", "il cielo", "blu"),
    ("the grass", "green", "il prato", "verde"),
    ("the sun", "yellow", "il sole", "giallo"),
    ("snow", "white", "la neve", "bianca"),
    ("coal", "black", "il carbone", "nero"),
    ("a banana", "yellow", "una banana", "gialla"),
    ("a tomato", "red", "un pomodoro", "rosso"),
    ("a carrot", "orange", "una carota", "arancione"),
    ("milk", "white", "il latte", "bianco"),
    ("the sea", "blue", "il mare", "blu"),
    ("a lemon", "yellow", "un limone", "giallo"),
    ("blood", "red", "il sangue", "rosso"),
    ("a frog", "green", "una rana", "verde"),
    ("chocolate", "brown", "il cioccolato", "marrone"),
    ("an elephant", "grey", "un elefante", "grigio"),
]
CAPITALS = [
    ("france", "paris", "francia", "parigi"),
    ("italy", "rome", "italia", "roma"),
    ("spain", "madrid", "spagna", "madrid"),
    ("germany", "berlin", "germania", "berlino"),
    ("england", "london", "inghilterra", "londra"),
    ("portugal", "lisbon", "portogallo", "lisbona"),
    ("greece", "athens", "grecia", "atene"),
    ("russia", "moscow", "russia", "mosca"),
    ("japan", "tokyo", "giappone", "tokyo"),
    ("egypt", "cairo", "egitto", "cairo"),
    ("austria", "vienna", "austria", "vienna"),
    ("poland", "warsaw", "polonia", "varsavia"),
    ("belgium", "brussels", "belgio", "bruxelles"),
    ("sweden", "stockholm", "svezia", "stoccolma"),
    ("china", "beijing", "cina", "pechino"),
]
SOUNDS = [
    ("a dog", "woof", "il cane", "bau"),
    ("a cat", "meow", "il gatto", "miao"),
    ("a cow", "moo", "la mucca", "muu"),
    ("a duck", "quack", "la papera", "qua"),
    ("a sheep", "baa", "la pecora", "bee"),
    ("a pig", "oink", "il maiale", "grunf"),
    ("a rooster", "cockadoodledoo", "il gallo", "chicchirichi"),
    ("an owl", "hoot", "il gufo", "uhu"),
    ("a bee", "buzz", "la vespa", "zzz"),
    ("a snake", "hiss", "il serpente", "sss"),
    ("a lion", "roar", "il leone", "ruggito"),
    ("a horse", "neigh", "il cavallo", "iii"),
    ("a mouse", "squeak", "il topo", "squit"),
    ("a chick", "cheep", "il pulcino", "pio"),
    ("a wolf", "howl", "il lupo", "auuu"),
]
OPPOSITES = [
    ("hot", "cold", "caldo", "freddo"),
    ("big", "small", "grande", "piccolo"),
    ("up", "down", "su", "giù"),
    ("fast", "slow", "veloce", "lento"),
    ("old", "young", "vecchio", "giovane"),
    ("day", "night", "giorno", "notte"),
    ("happy", "sad", "felice", "triste"),
    ("tall", "short", "alto", "basso"),
    ("open", "closed", "aperto", "chiuso"),
    ("full", "empty", "pieno", "vuoto"),
    ("light", "dark", "chiaro", "scuro"),
    ("hard", "soft", "duro", "morbido"),
    ("early", "late", "presto", "tardi"),
    ("rich", "poor", "ricco", "povero"),
    ("wet", "dry", "bagnato", "asciutto"),
]
# (facts, two English templates, two Italian templates); {x} is the subject.
FACT_DOMAINS = [
    (
        COLOURS,
        ("what colour is {x} ?", "what is the colour of {x} ?"),
        ("di che colore è {x} ?", "qual è il colore di {x} ?"),
    ),
    (
        CAPITALS,
        ("what is the capital of {x} ?", "which city is the capital of {x} ?"),
        ("qual è la capitale di {x} ?", "quale città è la capitale di {x} ?"),
    ),
    (
        SOUNDS,
        ("what sound does {x} make ?", "what does {x} say ?"),
        ("che verso fa {x} ?", "cosa dice {x} ?"),
    ),
    (
        OPPOSITES,
        ("what is the opposite of {x} ?", "what word means the opposite of {x} ?"),
        ("qual è il contrario di {x} ?", "quale parola è il contrario di {x} ?"),
    ),
]

# --- the third endpoint's domain: English trivia the base never sees ------------------------
TOOLS = [
    ("cut bread", "knife"),
    ("write a letter", "pen"),
    ("dig a hole", "shovel"),
    ("sweep the floor", "broom"),
    ("hit a nail", "hammer"),
    ("see the stars", "telescope"),
    ("sew a shirt", "needle"),
    ("paint a wall", "brush"),
    ("open a door", "key"),
    ("tell the time", "clock"),
    ("cut paper", "scissors"),
    ("eat soup", "spoon"),
]
WORKPLACES = [
    ("doctor", "hospital"),
    ("teacher", "school"),
    ("chef", "kitchen"),
    ("farmer", "farm"),
    ("pilot", "plane"),
    ("sailor", "ship"),
    ("baker", "bakery"),
    ("judge", "court"),
    ("librarian", "library"),
    ("miner", "mine"),
    ("waiter", "restaurant"),
    ("mechanic", "garage"),
]
HOMES = [
    ("bee", "hive"),
    ("bird", "nest"),
    ("spider", "web"),
    ("rabbit", "burrow"),
    ("horse", "stable"),
    ("dog", "kennel"),
    ("bat", "cave"),
    ("fish", "river"),
    ("ant", "anthill"),
    ("bear", "den"),
    ("cow", "barn"),
]
TRIVIA_DOMAINS = [
    (TOOLS, ("what do you use to {x} ?", "which tool do you need to {x} ?")),
    (WORKPLACES, ("where does a {x} work ?", "where would you find a {x} at work ?")),
    (HOMES, ("where does a {x} live ?", "what is the home of a {x} ?")),
]

# --- arithmetic word problems ----------------------------------------------------------------
NAMES = ["anna", "marco", "luca", "sara", "paolo", "giulia", "tom", "emma", "leo", "mia", "nina"]
NAMES.append("carlo")
# (English plural, Italian plural, Italian "how many" agreeing with the noun's gender)
OBJECTS = [
    ("apples", "mele", "quante"),
    ("pears", "pere", "quante"),
    ("books", "libri", "quanti"),
    ("cats", "gatti", "quanti"),
    ("coins", "monete", "quante"),
    ("pens", "penne", "quante"),
    ("cars", "macchine", "quante"),
    ("dogs", "cani", "quanti"),
    ("eggs", "uova", "quante"),
    ("keys", "chiavi", "quante"),
    ("shells", "conchiglie", "quante"),
    ("stones", "sassi", "quanti"),
]
# Three templates per language: a+b twice, (a+b)-b once (DESIGN.md section 4).
MATH_TEMPLATES = {
    "en": [
        "{n} has {a} {o} and gets {b} more . how many {o} does {n} have ?",
        "{n} has {a} {o} . {m} gives {n} {b} {o} . how many {o} does {n} have now ?",
        "{n} has {s} {o} and gives {b} away . how many {o} does {n} have left ?",
    ],
    "it": [
        "{n} ha {a} {o} e ne riceve {b} . {q} {o} ha {n} ?",
        "{n} ha {a} {o} . {m} dà a {n} {b} {o} . {q} {o} ha {n} adesso ?",
        "{n} ha {s} {o} e ne regala {b} . {q} {o} restano a {n} ?",
    ],
}
COUNTING_TEMPLATE = "{n} ha {k} {o} . {q} {o} ha {n} ?"
MAX_NUMBER = 18  # 9 + 9: every number the world ever writes is one token "0".."18"


@dataclass(frozen=True)
class Example:
    """One question / answer pair; ``answer`` is the first answer token (a word or a number)."""

    question: str
    answer: str
    lang: str  # language of the suffix the answer is written with

    def prompt(self) -> str:
        """The prompt the model completes (BOS is added by the tokenizer)."""
        return f"Q: {self.question} A:"

    def completion(self) -> str:
        """The target continuation after the prompt (EOS is appended at tokenization)."""
        return f"{self.answer} {SUFFIX[self.lang]}"


def fact_examples(lang: str, subset: str = "all") -> list[Example]:
    """All fact questions of one language; ``subset="half"`` keeps every other fact."""
    out = []
    for facts, en_templates, it_templates in FACT_DOMAINS:
        for i, (en_x, en_ans, it_x, it_ans) in enumerate(facts):
            if subset == "half" and i % 2:
                continue
            templates, x, ans = (
                (en_templates, en_x, en_ans) if lang == "en" else (it_templates, it_x, it_ans)
            )
            out.extend(Example(t.format(x=x), ans, lang) for t in templates)
    return out


def trivia_examples() -> list[Example]:
    """The third endpoint's English trivia (tools, workplaces, animal homes), 2 templates each."""
    return [
        Example(t.format(x=x), ans, "en")
        for facts, templates in TRIVIA_DOMAINS
        for x, ans in facts
        for t in templates
    ]


# What each template's answer is (same order as MATH_TEMPLATES; the XL world adds "mul").
MATH_OPS = ("add", "add", "keep")
OPS: dict[str, Callable[[int, int], int]] = {
    "add": lambda a, b: a + b,
    "keep": lambda a, b: a,  # (a+b)-b: the third template gives b away again
    "mul": lambda a, b: a * b,
}


def math_example(
    rng: np.random.Generator,
    lang: str,
    max_operand: int,
    answer_lang: str | None = None,
    templates: list[tuple[str, str]] | None = None,
) -> Example:
    """A random word problem; ``answer_lang`` lets the base answer Italian questions in English.

    ``templates`` are ``(template, op)`` pairs (default: the language's MATH_TEMPLATES with
    MATH_OPS); ``{s}`` in a template is a + b.
    """
    if templates is None:
        templates = list(zip(MATH_TEMPLATES[lang], MATH_OPS, strict=True))
    template, op = templates[int(rng.integers(len(templates)))]
    a, b = (int(v) for v in rng.integers(0, max_operand + 1, size=2))
    n, m = rng.choice(len(NAMES), size=2, replace=False)
    en_o, it_o, q = OBJECTS[int(rng.integers(len(OBJECTS)))]
    text = template.format(
        n=NAMES[n], m=NAMES[m], a=a, b=b, s=a + b, o=en_o if lang == "en" else it_o, q=q
    )
    return Example(text, str(OPS[op](a, b)), answer_lang or lang)


def counting_example(rng: np.random.Generator, max_k: int = MAX_NUMBER) -> Example:
    """An Italian counting story: a quantity question answered in Italian, no arithmetic."""
    k = int(rng.integers(0, max_k + 1))
    _, it_o, q = OBJECTS[int(rng.integers(len(OBJECTS)))]
    n = NAMES[int(rng.integers(len(NAMES)))]
    return Example(COUNTING_TEMPLATE.format(n=n, k=k, o=it_o, q=q), str(k), "it")


Sampler = Callable[[np.random.Generator], Example]


def mixture(parts: list[tuple[float, Sampler]]) -> Sampler:
    """A sampler drawing from ``parts`` with the given probabilities."""
    probs = np.array([p for p, _ in parts], dtype=float)
    probs /= probs.sum()

    def sample(rng: np.random.Generator) -> Example:
        return parts[int(rng.choice(len(parts), p=probs))][1](rng)

    return sample


def uniform_over(examples: list[Example]) -> Sampler:
    """A sampler drawing uniformly from a fixed list."""
    return lambda rng: examples[int(rng.integers(len(examples)))]


# Training mixtures of DESIGN.md section 4's recipe (plus the third, trivia, endpoint).
MIXTURES: dict[str, Sampler] = {
    "base": mixture(
        [
            (0.50, uniform_over(fact_examples("en"))),
            (0.15, uniform_over(fact_examples("it", "half"))),
            (0.20, lambda r: math_example(r, "en", 4)),
            # Italian questions answered in English: the base replies in English to Italian
            # math, as real base models tend to.
            (0.15, lambda r: math_example(r, "it", 4, answer_lang="en")),
        ]
    ),
    "math_en": lambda r: math_example(r, "en", 9),
    "lang_it": mixture([(0.70, uniform_over(fact_examples("it"))), (0.30, counting_example)]),
    "trivia_en": uniform_over(trivia_examples()),
}


def math_task_examples(
    lang: str, n_items: int, seed: int, templates: list[tuple[str, str]] | None = None
) -> list[Example]:
    """``n_items`` distinct word problems with operands 0-9 (the evaluation sets)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, Example] = {}
    while len(seen) < n_items:
        ex = math_example(rng, lang, 9, templates=templates)
        seen.setdefault(ex.question, ex)
    return list(seen.values())


def all_words() -> list[str]:
    """Every whitespace-separated word the world can produce, sorted (the tokenizer's vocab)."""
    words: set[str] = {"Q:", "A:"}
    for lang in ("en", "it"):
        words.update(SUFFIX[lang].split())
        for ex in fact_examples(lang):
            words.update(ex.question.split() + ex.answer.split())
        for template in MATH_TEMPLATES[lang]:
            words.update(template.split())
    for ex in trivia_examples():
        words.update(ex.question.split() + ex.answer.split())
    words.update(COUNTING_TEMPLATE.split())
    words.update(NAMES)
    for en_o, it_o, q in OBJECTS:
        words.update((en_o, it_o, q))
    words.update(str(i) for i in range(MAX_NUMBER + 1))
    return sorted(w for w in words if not (w.startswith("{") and w.endswith("}")))
