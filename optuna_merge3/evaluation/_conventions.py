"""How each language writes numbers and states an answer: one small table, read by the scorers.

The rules that use this table are listed one per line in docs/evaluation.md ("Scoring rules").
"""

from __future__ import annotations

from dataclasses import dataclass

# Plain ASCII space is a group mark only where the table says so ("1 000" in French); the
# no-break, narrow no-break and thin spaces are typographic group marks in every language.
_TYPO_SPACES = ("\u00a0", "\u202f", "\u2009")


@dataclass(frozen=True)
class Convention:
    """One language's conventions.

    Attributes:
        decimal: the decimal mark ("." or ",").
        groups: marks that group thousands ("1.000" it, "1,000" en, "1 000" fr).
        statements: regex fragments that introduce the chosen option's letter ("the answer is").
        option_words: words that name an option before its letter ("option C").
        copulas: verbs after which a bare "A" is the option, not an article ("A is correct").
        number_words: "zero one two ..." (0, 1, 2, ...), used only when a task opts in.
    """

    decimal: str
    groups: tuple[str, ...]
    statements: tuple[str, ...] = ()
    option_words: tuple[str, ...] = ()
    copulas: tuple[str, ...] = ()
    number_words: str = ""


_COMMA_GROUPS = (".", " ", *_TYPO_SPACES)
_POINT_GROUPS = (",", *_TYPO_SPACES)

CONVENTIONS: dict[str, Convention] = {  # (decimal, groups, statements, option words, copulas, words)
    "en": Convention(
        ".", _POINT_GROUPS,
        (r"(?:the\s+)?(?:correct\s+|right\s+|final\s+|best\s+)?(?:answer|option|choice)"
         r"\s*(?:is|would\s+be|will\s+be|:|=)",),
        ("option", "choice", "answer"), ("is", "was", "seems", "looks", "would", "must", "fits"),
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty",
    ),
    "it": Convention(
        ",", _COMMA_GROUPS,
        (r"(?:la\s+)?risposta\s*(?:corretta\s+|giusta\s+|esatta\s+|finale\s+)?(?:è|e'|:)",
         r"l['’]\s*opzione\s+(?:corretta|giusta)\s+è"),
        ("opzione", "scelta", "risposta"), ("è", "sembra"),
        "zero uno due tre quattro cinque sei sette otto nove dieci undici dodici tredici "
        "quattordici quindici sedici diciassette diciotto diciannove venti",
    ),
    "de": Convention(
        ",", _COMMA_GROUPS,
        (r"(?:die\s+)?(?:richtige\s+|korrekte\s+)?antwort\s*(?:ist|lautet|:)",),
        ("option", "antwort", "auswahl"), ("ist", "wäre", "scheint"),
        "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn "
        "fünfzehn sechzehn siebzehn achtzehn neunzehn zwanzig",
    ),
    "fr": Convention(
        ",", _COMMA_GROUPS,
        (r"(?:la\s+)?(?:bonne\s+)?réponse\s*(?:correcte\s+)?(?:est|:)",),
        ("option", "choix", "réponse"), ("est", "semble"),
        "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze "
        "seize dix-sept dix-huit dix-neuf vingt",
    ),
    "es": Convention(
        ",", _COMMA_GROUPS,
        (r"(?:la\s+)?respuesta\s*(?:correcta\s+)?(?:es|:)",),
        ("opción", "respuesta"), ("es", "parece"),
        "cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince "
        "dieciséis diecisiete dieciocho diecinueve veinte",
    ),
    "pt": Convention(
        ",", _COMMA_GROUPS,
        (r"(?:a\s+)?resposta\s*(?:correta\s+|certa\s+)?(?:é|:)",),
        ("opção", "alternativa", "resposta"), ("é", "parece"),
        "zero um dois três quatro cinco seis sete oito nove dez onze doze treze catorze quinze "
        "dezesseis dezessete dezoito dezenove vinte",
    ),
    "nl": Convention(
        ",", _COMMA_GROUPS,
        (r"(?:het\s+)?(?:juiste\s+|correcte\s+)?antwoord\s*(?:is|:)",),
        ("optie", "keuze", "antwoord"), ("is", "lijkt"),
        "nul een twee drie vier vijf zes zeven acht negen tien elf twaalf dertien veertien "
        "vijftien zestien zeventien achttien negentien twintig",
    ),
    "ro": Convention(
        ",", _COMMA_GROUPS,
        (r"răspunsul\s*(?:corect\s+)?(?:este|e|:)", r"varianta\s+corectă\s+(?:este|e)",
         r"răspuns\s*:"),
        ("opțiunea", "varianta", "răspunsul"), ("este", "pare"),
        "zero unu doi trei patru cinci șase șapte opt nouă zece unsprezece doisprezece "
        "treisprezece paisprezece cincisprezece șaisprezece șaptesprezece optsprezece "
        "nouăsprezece douăzeci",
    ),
    "ja": Convention(
        ".", _POINT_GROUPS,
        (r"(?:答え|正解|解答)\s*(?:は|:)",),
        ("選択肢",),
    ),
    "zh": Convention(
        ".", _POINT_GROUPS,
        (r"(?:正确)?答案\s*(?:是|为|:)", r"应选", r"选择?\s*(?=[A-Za-z])"),
        ("选项",),
    ),
}
"""ISO 639-1 code -> conventions. Statements are matched in every language (a model asked in
Italian may answer "The answer is B"); the item's language decides only how numbers are read."""

NEUTRAL = Convention(".", _POINT_GROUPS)
"""For items without a language: point decimal, comma thousands (the reading lm-eval assumes)."""


def convention(language: str | None) -> Convention:
    """The conventions of ``language`` (``None`` or a language not in the table: NEUTRAL)."""
    return CONVENTIONS.get((language or "").lower().split("-")[0], NEUTRAL)


# Full-width ASCII (U+FF01..U+FF5E) -> ASCII, and the dashes a model writes for "minus".
_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_WIDTH.update({0x2212: ord("-"), 0xFE63: ord("-"), 0x3000: ord(" ")})


def normalize_text(text: str) -> str:
    """Full-width digits, letters and punctuation as ASCII; U+2212 (and small / full-width
    hyphen-minus) as "-". Not NFKC: that would turn "3²" into "32" and drop the narrow no-break
    space that groups thousands."""
    return text.translate(_WIDTH)


def is_cjk(char: str) -> bool:
    """Whether ``char`` is a Han, kana or Hangul character (digits glued to them are numbers)."""
    cp = ord(char)
    return (
        0x3040 <= cp <= 0x30FF  # hiragana, katakana
        or 0x3400 <= cp <= 0x9FFF  # CJK unified ideographs (+ extension A)
        or 0xAC00 <= cp <= 0xD7AF  # Hangul syllables
        or 0xF900 <= cp <= 0xFAFF  # CJK compatibility ideographs
    )
