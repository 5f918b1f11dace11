"""The scoring agreement table: answers as models write them, judged by a careful human grader.

Each case names the rule of docs/evaluation.md ("Scoring rules") it checks. ``expected`` is the
grader's judgement: for number and choice cases whether the answer is correct; for language
cases (rules L*) whether the answer is in ``lang`` (``None``: a careful grader cannot tell from
the prose, the task's ``undecidable_language`` policy decides). ``note`` explains a case this
project is known to judge differently (the test expects that difference, so fixing it shows).

Used by tests/evaluation/test_scoring_cases.py and benchmarks/scoring_agreement.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    rule: str
    lang: str
    answer: str
    reference: str
    expected: bool | None
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def kind(self) -> str:
        return {"N": "number", "C": "choice", "L": "language"}[self.rule[0]]


def _n(rule: str, lang: str, rows: list[tuple], **options: Any) -> list[Case]:
    """Number cases: (answer, reference, expected[, note])."""
    return [Case(rule, lang, r[0], r[1], r[2], dict(options), *r[3:]) for r in rows]


NUMBER_CASES: list[Case] = [
    # N1: the GSM8K marker wins over later chatty numbers
    *_n("N1", "en", [
        ("She has 5 + 3 = 8 apples.\n#### 8", "8", True),
        ("#### 72\nI hope these 2 steps helped!", "72", True),
        ("48/2 = 24 clips in May. 48 + 24 = 72\n#### 72\n\nQuestion 2: 15", "72", True),
        ("#### 1,080", "1080", True),
        ("The answer is 72. #### 70", "72", False),
    ]),
    *_n("N1", "it", [("Quindi ne restano 12.\n#### 12\nSpero che 3 esempi bastino.", "12", True)]),
    *_n("N1", "de", [("#### 1.250 Euro, also 3 Posten", "1250", True)]),
    *_n("N1", "ja", [("#### 42\n他に 3 つの方法があります。", "42", True)]),
    # N2: the last number of the text (position "first": the first)
    *_n("N2", "en", [
        ("John had 12 apples and gave away 5, so he has 7 left.", "7", True),
        ("John had 12 apples and gave away 5, so he has 7 left.", "12", False),
        ("Step 1: 10 - 4 = 6. Step 2: 6 * 2 = 12.", "12", True),
        ("Sure! 3 * 4 = 12. So the answer is 12. Hope this helps!", "12", True),
        ("I don't know.", "3", False),
        ("The answer is 5, not 7.", "5", True,
         "the last-number rule reads 7; a grader reads the correction; no scorer compared here "
         "understands negation"),
    ]),
    *_n("N2", "it", [
        ("Marco ha 5 mele e ne compra 3, quindi ne ha 8.", "8", True),
        ("Ci sono 4 gatti e 2 cani: in tutto 6 animali.", "6", True),
    ]),
    *_n("N2", "de", [("Sie hat 4 Äpfel und kauft 6 dazu, also insgesamt 10 Äpfel.", "10", True)]),
    *_n("N2", "fr", [("Elle a 3 pommes et en achète 4 : elle en a 7.", "7", True)]),
    *_n("N2", "es", [("Tiene 9 libros, regala 2 y le quedan 7.", "7", True)]),
    *_n("N2", "pt", [("Ele tinha 10 reais, gastou 4 e ficou com 6.", "6", True)]),
    *_n("N2", "nl", [("Ze heeft 8 appels en eet er 3, dus 5 blijven over.", "5", True)]),
    *_n("N2", "ro", [("Are 6 mere și mai cumpără 3, deci are 9 mere.", "9", True)]),
    *_n("N2", "ja", [("りんごは 5 個あります。3 個食べたので、残りは 2 個です。", "2", True)]),
    *_n("N2", "zh", [("小明有5个苹果，吃了2个，还剩3个。", "3", True)]),
    *_n("N2", "it", [("7 è la risposta", "7", True), ("12 è la risposta, non 3", "12", True)],
        position="first"),
    *_n("N2", "en", [("7 is the answer", "12", False)], position="first"),
    # N3: the language's decimal mark
    *_n("N3", "it", [
        ("Il risultato è 3,5 litri.", "3.5", True),
        ("Costa 2,50 euro.", "2.5", True),
        ("La media è 7,25.", "7.25", True),
        ("Il risultato è 3,5 litri.", "35", False),
    ]),
    *_n("N3", "de", [("Die Antwort ist 2,5 Meter.", "2.5", True),
                     ("Das Ergebnis ist 0,75.", "0.75", True)]),
    *_n("N3", "fr", [("La réponse est 12,5 km.", "12.5", True),
                     ("Il reste 0,2 litre.", "0.2", True)]),
    *_n("N3", "es", [("El resultado es 4,8 metros.", "4.8", True)]),
    *_n("N3", "pt", [("O total é 9,99 reais.", "9.99", True)]),
    *_n("N3", "nl", [("Het antwoord is 1,5 liter.", "1.5", True)]),
    *_n("N3", "ro", [("Rezultatul este 6,4 kg.", "6.4", True)]),
    *_n("N3", "en", [("That is 3.5 kg of flour.", "3.5", True),
                     ("It costs 0.99 dollars.", "0.99", True)]),
    *_n("N3", "ja", [("答えは 2.5 です。", "2.5", True)]),
    *_n("N3", "zh", [("答案是 3.75。", "3.75", True)]),
    # N4: one group mark followed by exactly three digits groups (its meaning by language)
    *_n("N4", "it", [
        ("Il prezzo è 1.000 euro.", "1000", True),
        ("Ha guadagnato 12.500 euro.", "12500", True),
        ("La risposta è 1,000.", "1", True),
        ("Il prezzo è 1.000 euro.", "1", False),
        ("Sono 2.400 persone.", "2400", True),
    ]),
    *_n("N4", "de", [("Das kostet 1.000 Euro.", "1000", True),
                     ("Es sind 3.600 Sekunden.", "3600", True)]),
    *_n("N4", "nl", [("Het kost 1.000 euro.", "1000", True),
                     ("Er zijn 7.500 mensen.", "7500", True)]),
    *_n("N4", "ro", [("Costă 1.000 de lei.", "1000", True),
                     ("Sunt 4.200 de oameni.", "4200", True)]),
    *_n("N4", "es", [("Cuesta 5.000 pesos.", "5000", True)]),
    *_n("N4", "pt", [("Custa 2.000 reais.", "2000", True)]),
    *_n("N4", "en", [
        ("The answer is 1,000.", "1000", True),
        ("The answer is 1,000.", "0", False),
        ("He paid 2,500 dollars.", "2500", True),
        ("The ratio is 1.000 exactly.", "1", True),
        ("It weighs 1.250 kg.", "1.25", True),
    ]),
    *_n("N4", "ja", [("合計は 1,200 円です。", "1200", True)]),
    *_n("N4", "zh", [("一共 3,000 元。", "3000", True)]),
    # N5: a repeated group mark groups in every language
    *_n("N5", "it", [("La risposta è 1.000.000 di euro", "1000000", True)]),
    *_n("N5", "de", [("Die Summe beträgt 1.250.000 Euro.", "1250000", True)]),
    *_n("N5", "en", [("Total: 1,234,567 dollars", "1234567", True),
                     ("The population is 2.500.000.", "2500000", True)]),
    *_n("N5", "it", [("Sono 1,000,000 di persone.", "1000000", True)]),
    *_n("N5", "fr", [("Il y a 3.000.000 habitants.", "3000000", True)]),
    *_n("N5", "ja", [("人口は 12,345,678 人です。", "12345678", True)]),
    *_n("N5", "es", [("Son 2.000.000 de euros.", "2000000", True)]),
    *_n("N5", "ro", [("Bugetul este 1.500.000 lei.", "1500000", True)]),
    # N6: with both marks the later one is the decimal mark
    *_n("N6", "it", [("Il totale è 1.234,56 euro.", "1234.56", True)]),
    *_n("N6", "de", [("Es kostet 2.499,99 Euro.", "2499.99", True)]),
    *_n("N6", "en", [("It costs 1,234.56 dollars.", "1234.56", True),
                     ("The sum is 1.234,5.", "1234.5", True)]),
    *_n("N6", "pt", [("O valor é 10.500,75.", "10500.75", True)]),
    *_n("N6", "nl", [("Het bedrag is 3.200,10 euro.", "3200.1", True)]),
    *_n("N6", "ro", [("Suma este 1.000,50 lei.", "1000.5", True)]),
    *_n("N6", "fr", [("Le total est 1.234,5.", "1234.5", True)]),
    # N7: space, no-break space and narrow no-break space groups
    *_n("N7", "fr", [
        ("La réponse est 1 000 euros.", "1000", True),
        ("Il y a 12 345 habitants.", "12345", True),
        ("Le total est 1\u202f000\u202f000.", "1000000", True),
        ("Cela fait 2\u00a0500,5 mètres.", "2500.5", True),
    ]),
    *_n("N7", "de", [("Es sind 10\u202f000 Menschen.", "10000", True)]),
    *_n("N7", "es", [("Son 4 500 kilómetros.", "4500", True)]),
    *_n("N7", "pt", [("São 1 250 pessoas.", "1250", True)]),
    *_n("N7", "ro", [("Sunt 3 000 de metri.", "3000", True)]),
    *_n("N7", "en", [("The answer is 1\u202f000.", "1000", True),
                     ("She ran 5 000 metres.", "5000", True,
                      "English does not group with a plain space here: read as 5 and 000, the "
                      "last number is 0; a grader reads 5000 (SI style)")]),
    *_n("N7", "it", [("Sono 1 000 euro.", "1000", True)]),
    # N8: a mark that cannot group in this language is a decimal mark
    *_n("N8", "it", [("Il risultato è 3.5 litri.", "3.5", True), ("Fa 0.25.", "0.25", True)]),
    *_n("N8", "de", [("Das sind 2.75 Meter.", "2.75", True)]),
    *_n("N8", "en", [("The result is 2,75.", "2.75", True), ("It is 0,500.", "0.5", True),
                     ("The answer is 3,5 liters.", "3.5", True)]),
    *_n("N8", "fr", [("Le résultat est 7.5.", "7.5", True)]),
    *_n("N8", "es", [("Es 10.25 metros.", "10.25", True)]),
    *_n("N8", "nl", [("Het is 0.5 liter.", "0.5", True)]),
    *_n("N8", "ja", [("答えは 3,5 です。", "3.5", True)]),
    # N9: full-width digits and punctuation, the minus sign U+2212
    *_n("N9", "ja", [
        ("答えは４２です。", "42", True),
        ("合計は１，０００円です。", "1000", True),
        ("答えは３．５です。", "3.5", True),
        ("気温は－５度です。", "-5", True),
    ]),
    *_n("N9", "zh", [("答案是１２。", "12", True), ("总共２，５００元。", "2500", True)]),
    *_n("N9", "en", [("The temperature dropped to −3 degrees", "-3", True),
                     ("The change is −12.5.", "-12.5", True)]),
    *_n("N9", "de", [("Die Temperatur ist −7 Grad.", "-7", True)]),
    *_n("N9", "it", [("La variazione è −2,5.", "-2.5", True)]),
    # N10: digits glued to CJK or units are numbers; glued to letters before them are not
    *_n("N10", "ja", [("答えは42個です。", "42", True), ("全部で12本", "12", True),
                      ("答えは7人", "7", True)]),
    *_n("N10", "zh", [("一共有15个苹果", "15", True), ("答案是8本书", "8", True)]),
    *_n("N10", "en", [
        ("He ran 12km.", "12", True),
        ("The box weighs 5kg.", "5", True),
        ("The answer is 6 liters of CO2.", "6", True),
        ("The area is 25 m².", "25", True),
        ("We need 3 molecules of H2O.", "3", True),
        ("It uses 4 GB of RAM, the model is GPT4", "4", True),
    ]),
    *_n("N10", "it", [("Servono 3 litri di H2O.", "3", True), ("L'area è 16 m².", "16", True)]),
    *_n("N10", "de", [("Der Raum hat 20m² und 3 Fenster.", "3", True)]),
    *_n("N10", "fr", [("Il faut 2 molécules de CO2.", "2", True)]),
    # N11: a sign only directly before the digits (or a currency symbol)
    *_n("N11", "en", [
        ("The result is -7.", "-7", True),
        ("x = -4", "-4", True),
        ("10 - 3 = 7", "7", True),
        ("10-3", "-3", False),
        ("The balance is -$5.", "-5", True),
        ("5 - 8 = -3", "-3", True),
        ("x=-4", "-4", True),
    ]),
    *_n("N11", "it", [("Il saldo è -12 euro.", "-12", True), ("Il risultato è +5.", "5", True)]),
    *_n("N11", "de", [("Das Ergebnis ist -2,5.", "-2.5", True)]),
    *_n("N11", "fr", [("La température est de -10 degrés.", "-10", True)]),
    *_n("N11", "es", [("La respuesta es -6.", "-6", True)]),
    # N12: currency, units and percent signs are ignored (no percent conversion)
    *_n("N12", "en", [
        ("It costs $18.", "18", True),
        ("It costs $1,000.", "1000", True),
        ("The discount is 50%.", "50", True),
        ("The discount is 50%.", "0.5", False),
        ("He earned £2,400.50.", "2400.5", True),
        ("The answer is 12 km.", "12", True),
    ]),
    *_n("N12", "it", [("Costa € 12,50.", "12.5", True), ("Lo sconto è del 20 %.", "20", True),
                      ("Il prezzo è 1.000€.", "1000", True)]),
    *_n("N12", "de", [("Der Preis ist 3,99 €.", "3.99", True)]),
    *_n("N12", "fr", [("Cela coûte 15 €.", "15", True), ("Une hausse de 12,5 %.", "12.5", True)]),
    *_n("N12", "ja", [("価格は¥1,500です。", "1500", True), ("答えは 30% です。", "30", True)]),
    *_n("N12", "pt", [("Custa R$ 25,90.", "25.9", True)]),
    *_n("N12", "es", [("Cuesta 7,5 €.", "7.5", True)]),
    # N13: numbers written as words are not numbers unless the task opts in
    *_n("N13", "it", [("La risposta è sette.", "7", False),
                      ("Ne restano cinque.", "5", False)]),
    *_n("N13", "en", [("The answer is seven.", "7", False)]),
    *_n("N13", "it", [("La risposta è sette.", "7", True), ("Marco ha tre mele.", "3", True),
                      ("Ne ha dodici.", "12", True)], number_words=True),
    *_n("N13", "de", [("Die Antwort ist sieben.", "7", True), ("Sie hat zwölf Äpfel.", "12", True)],
        number_words=True),
    *_n("N13", "fr", [("Il en reste dix-sept.", "17", True)], number_words=True),
    *_n("N13", "es", [("Le quedan cuatro.", "4", True)], number_words=True),
    *_n("N13", "en", [("She has twelve apples and eats 2, so ten remain.", "10", True)],
        number_words=True),
    *_n("N13", "ro", [("Răspunsul este nouă.", "9", True)], number_words=True),
    *_n("N13", "nl", [("Het antwoord is acht.", "8", True)], number_words=True),
    *_n("N13", "pt", [("A resposta é seis.", "6", True)], number_words=True),
    # N14: exact decimal comparison
    *_n("N14", "en", [
        ("42", "42.0", True),
        ("0.50", "0.5", True),
        ("The answer is 3.50.", "3.5", True),
        ("The answer is 2.0000001.", "2", False),
        ("The answer is 0.33.", "0.333", False),
        ("The answer is 1/2.", "0.5", True,
         "fractions are read as two numbers (1 and 2), no scorer compared here evaluates them"),
    ]),
    *_n("N14", "it", [("Il risultato è 3,50.", "3.5", True), ("Fa 10,0.", "10", True)]),
    *_n("N14", "de", [("Das sind 7,00 Euro.", "7", True)]),
    # N15: a list of numbers is not one number
    *_n("N15", "en", [("The first primes are 2,3,5.", "5", True),
                      ("Options: 1.2.3", "3", True)]),
    *_n("N15", "it", [("I numeri sono 4,8,12.", "12", True)]),
    # as chain-of-thought answers end
    *_n("N2", "en", [("**Final answer:** 42", "42", True),
                     ("The answer is $\\boxed{1,000}$.", "1000", True),
                     ("So, 7 apples.", "7", True)]),
    *_n("N6", "de", [("Ergebnis: 12.345,67 €", "12345.67", True)]),
    *_n("N9", "ja", [("答えは１２３４５です", "12345", True)]),
    *_n("N2", "it", [("Quindi Luca ha 15 anni. Tra 5 anni ne avrà 20.", "15", True,
                      "the last number is 20, said after the answer; a grader reads the answer "
                      "to the question (15); every last-number scorer here fails it")]),
    # written after the rules were frozen and added as they scored (held out)
    *_n("N2", "en", [("Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every "
                      "day at the farmer's market.", "18", True)]),
    *_n("N12", "en", [("The total cost is $1,250.75.", "1250.75", True)]),
    *_n("N4", "de", [("Insgesamt verdient sie 2.400 Euro im Monat.", "2400", True)]),
    *_n("N3", "fr", [("Chaque part coûte 3,75 €, donc la réponse est 3,75.", "3.75", True)]),
    *_n("N7", "fr", [("La population est de 67 000 000 habitants.", "67000000", True)]),
    *_n("N4", "es", [("El coche cuesta 15.000 euros.", "15000", True)]),
    *_n("N3", "pt", [("A média é 8,5 pontos.", "8.5", True)]),
    *_n("N4", "nl", [("Hij verdient 3.250 euro per maand.", "3250", True)]),
    *_n("N3", "ro", [("Prețul este 12,99 lei.", "12.99", True)]),
    *_n("N10", "ja", [("太郎は毎日3km走ります。1週間で21kmです。", "21", True)]),
    *_n("N10", "zh", [("每天跑5公里，一周跑35公里。", "35", True)]),
    *_n("N9", "ja", [("答え：１５０円", "150", True)]),
    *_n("N1", "en", [("Let's compute: 3 + 4 = 7.\n#### 7", "7", True)]),
    *_n("N11", "en", [("The temperature changed by -15 degrees.", "-15", True)]),
    *_n("N2", "it", [("Luca ha 3 libri, Anna ne ha il doppio, cioè 6. In tutto ne hanno 9.",
                      "9", True)]),
    *_n("N2", "de", [("Zuerst 5 + 5 = 10, dann 10 * 3 = 30. Die Antwort ist 30.", "30", True)]),
    *_n("N12", "it", [("Lo sconto è del 25%, quindi paga 75 euro.", "75", True)]),
    *_n("N6", "es", [("El total es 1.234,50 euros.", "1234.5", True)]),
    *_n("N2", "en", [("So the answer is 12 cookies per box (24 cookies / 2 boxes).", "12", True,
                      "the last number (2, of the explanation in brackets) is not the answer; a "
                      "grader reads the stated 12")]),
    *_n("N14", "de", [("Das Ergebnis ist 0,5.", "0.50", True)]),
    # hard cases the rules above do not cover (named disagreements)
    *_n("N2", "ja", [("答えは3万円です。", "30000", True,
                       "the multiplier 万 (10^4) is not read: the number is 3; a grader reads "
                       "30000")]),
]

CHOICES = {
    "en": ("Paris", "London", "Berlin", "Rome"),
    "it": ("Parigi", "Londra", "Berlino", "Roma"),
    "de": ("Paris", "London", "Berlin", "Rom"),
    "fr": ("Paris", "Londres", "Berlin", "Rome"),
    "es": ("París", "Londres", "Berlín", "Roma"),
    "pt": ("Paris", "Londres", "Berlim", "Roma"),
    "nl": ("Parijs", "Londen", "Berlijn", "Rome"),
    "ro": ("Paris", "Londra", "Berlin", "Roma"),
    "ja": ("パリ", "ロンドン", "ベルリン", "ローマ"),
    "zh": ("巴黎", "伦敦", "柏林", "罗马"),
}
"""The options of every choice case, in its language (A Paris, B London, C Berlin, D Rome)."""


def _c(rule: str, lang: str, rows: list[tuple]) -> list[Case]:
    """Choice cases: (answer, reference letter, expected[, note])."""
    return [Case(rule, lang, r[0], r[1], r[2], {}, *r[3:]) for r in rows]


CHOICE_CASES: list[Case] = [
    # C1: an answer statement wins over every other mention
    *_c("C1", "en", [
        ("The answer is C", "C", True),
        ("A and B are wrong; the answer is C.", "C", True),
        ("Answer: B", "B", True),
        ("the answer is b", "B", True),
        ("The correct answer is (C) Berlin.", "C", True),
        ("The correct option is D, not (A).", "D", True),
        ("Final answer: **B**", "B", True),
        ("The answer is C because A and B are in other countries.", "C", True),
    ]),
    *_c("C1", "it", [
        ("La risposta corretta è B", "B", True),
        ("Risposta: D", "D", True),
        ("Escludo A e C: la risposta è B.", "B", True),
        ("La risposta giusta è C, non A.", "C", True),
        ("L'opzione corretta è D", "D", True),
    ]),
    *_c("C1", "de", [
        ("Die Antwort lautet D", "D", True),
        ("Die richtige Antwort ist C, nicht A.", "C", True),
        ("Antwort: B", "B", True),
        ("A und B sind falsch, die Antwort ist D.", "D", True),
    ]),
    *_c("C1", "nl", [
        ("Het antwoord is A", "A", True),
        ("Het juiste antwoord is C, niet B.", "C", True),
        ("Antwoord: D", "D", True),
    ]),
    *_c("C1", "ro", [
        ("Răspunsul corect este C", "C", True),
        ("Răspunsul este B, nu A.", "B", True),
        ("Varianta corectă este D", "D", True),
    ]),
    *_c("C1", "ja", [
        ("答えはB", "B", True),
        ("答えはCです。Aではありません。", "C", True),
        ("正解は D です", "D", True),
        ("答え: A", "A", True),
    ]),
    *_c("C1", "fr", [
        ("La bonne réponse est C", "C", True),
        ("La réponse est B, pas A.", "B", True),
        ("Réponse : D", "D", True),
    ]),
    *_c("C1", "es", [
        ("La respuesta correcta es D", "D", True),
        ("La respuesta es A, no C.", "A", True),
        ("Respuesta: B", "B", True),
    ]),
    *_c("C1", "pt", [
        ("A resposta correta é B", "B", True),
        ("A resposta é C, não D.", "C", True),
        ("Resposta: A", "A", True),
    ]),
    *_c("C1", "zh", [
        ("答案是C", "C", True),
        ("正确答案是B，不是A。", "B", True),
        ("答案：D", "D", True),
        ("我选A", "A", True),
    ]),
    *_c("C1", "en", [("The answer is C", "B", False)]),
    *_c("C1", "it", [("La risposta è A", "D", False)]),
    # C2: an answer that opens with its letter states it
    *_c("C2", "en", [
        ("B", "B", True),
        ("B.", "B", True),
        ("B)", "B", True),
        ("(B)", "B", True),
        ("B. London is the capital of the UK; (D) Rome is in Italy.", "B", True),
        ("(C) Berlin, since A and B are elsewhere", "C", True),
        ("**D**\n\nA, B and C are not in Italy.", "D", True),
        ("A", "B", False),
    ]),
    *_c("C2", "it", [("C\n\nSpiegazione: A e B sono in altri paesi.", "C", True)]),
    *_c("C2", "de", [("D: Rom liegt in Italien, nicht A.", "D", True)]),
    *_c("C2", "fr", [("B - Londres, pas A.", "B", True)]),
    # C3: of several statements the last counts
    *_c("C3", "it", [("La risposta corretta è Roma? No, la risposta è A", "A", True),
                      ("Risposta: B. Anzi, ripensandoci, la risposta è C.", "C", True)]),
    *_c("C3", "en", [("The answer is B. Wait, the answer is D.", "D", True)]),
    *_c("C3", "de", [("Die Antwort ist A... nein, die Antwort ist B.", "B", True)]),
    # C4: otherwise the last explicit mention: "(C)", "C)", "option C"
    *_c("C4", "en", [
        ("I would go with option C", "C", True),
        ("Not (A), not (B): (C)", "C", True),
        ("London is B) in the list", "B", True),
        ("I pick (d)", "D", True),
        ("Option A is tempting but option C is right", "C", True),
    ]),
    *_c("C4", "it", [("Sceglierei l'opzione B", "B", True), ("Direi (C)", "C", True)]),
    *_c("C4", "de", [("Ich wähle Option D", "D", True)]),
    *_c("C4", "es", [("Elijo la opción C", "C", True)]),
    *_c("C4", "pt", [("Escolho a alternativa B", "B", True)]),
    *_c("C4", "ro", [("Aleg varianta A", "A", True)]),
    *_c("C4", "nl", [("Ik kies optie D", "D", True)]),
    *_c("C4", "ja", [("選択肢Cが正しい", "C", True)]),
    *_c("C4", "zh", [("选项D正确", "D", True)]),
    # C5: a bare capital letter of the choices
    *_c("C5", "en", [("I think it is C", "C", True), ("Probably D, given the clues", "D", True),
                     ("It must be B or C, I'd say C", "C", True)]),
    *_c("C5", "it", [("Secondo me è B", "B", True)]),
    *_c("C5", "de", [("Ich glaube C", "C", True)]),
    *_c("C5", "fr", [("Je pense que c'est D", "D", True)]),
    *_c("C5", "es", [("Creo que es B", "B", True)]),
    # C6: the English article and other-language words are not letters
    *_c("C6", "en", [
        ("A plant needs water; the capital is Berlin", "C", True),
        ("the answer is a metal spoon, so Rome", "D", True),
        ("I think it is London", "B", True),
        ("a city in France", "A", False),
        ("A is correct", "A", True),
        ("I believe D", "D", True),
        ("Washington D.C. is not listed; Rome", "D", True),
    ]),
    *_c("C6", "it", [
        ("C'è un'unica capitale giusta: Roma", "D", True),
        ("E poi c'è Londra", "B", True),
        ("A Roma c'è il Colosseo, quindi D", "D", True),
        ("O forse Berlino", "C", True),
        ("La risposta è a Roma, la capitale", "D", True),
    ]),
    *_c("C6", "de", [("Berlin, d. h. die Hauptstadt", "C", True),
                     ("Es ist Rom, d. h. D", "D", True)]),
    *_c("C6", "es", [("Y luego está Londres", "B", True), ("O tal vez París", "A", True)]),
    *_c("C6", "pt", [("A capital é Roma", "D", True), ("E depois Londres", "B", True)]),
    *_c("C6", "ro", [("O capitală frumoasă este Roma", "D", True)]),
    *_c("C6", "fr", [("A Paris il y a la tour Eiffel, donc A", "A", True)]),
    # C7: letters outside the choices mean incorrect
    *_c("C7", "en", [("The answer is E", "A", False), ("(F)", "B", False),
                     ("Option C, as Figure X shows", "C", True)]),
    *_c("C7", "it", [("La risposta è E", "B", False)]),
    *_c("C7", "de", [("Die Antwort ist F", "C", False)]),
    *_c("C7", "ja", [("答えはE", "D", False)]),
    # C8: no letter: the one choice whose text appears in the answer
    *_c("C8", "en", [("I think the answer is London.", "B", True), ("Berlin", "C", True),
                     ("None of the options", "A", False)]),
    *_c("C8", "it", [("Secondo me è Berlino.", "C", True), ("Roma", "D", True)]),
    *_c("C8", "de", [("Es ist Rom.", "D", True)]),
    *_c("C8", "fr", [("C'est Londres.", "B", True)]),
    *_c("C8", "es", [("Es París.", "A", True)]),
    *_c("C8", "pt", [("É Berlim.", "C", True)]),
    *_c("C8", "nl", [("Het is Parijs.", "A", True)]),
    *_c("C8", "ja", [("ローマです。", "D", True)]),
    *_c("C8", "zh", [("是伦敦。", "B", True)]),
    # as chain-of-thought answers end
    *_c("C1", "en", [
        ("Let's think. Paris is in France, London in the UK. Berlin is the capital of Germany. "
         "Therefore, the answer is (C).", "C", True),
        ("**Answer:** C", "C", True),
        ("The answer is C. A is a city in France.", "C", True),
    ]),
    *_c("C1", "it", [("Analizziamo le opzioni: A) Parigi no, B) Londra no. La risposta è C) "
                      "Berlino.", "C", True), ("La risposta è: **B**", "B", True)]),
    *_c("C1", "fr", [("Berlin est la capitale de l'Allemagne. La réponse correcte est donc C.",
                      "C", True)]),
    *_c("C1", "nl", [("Berlijn is de hoofdstad van Duitsland, dus het antwoord is C.", "C", True)]),
    *_c("C1", "ro", [("Berlin este capitala Germaniei, deci răspunsul corect este C.", "C", True)]),
    *_c("C1", "ja", [("ドイツの首都はベルリンです。したがって、答えはCです。", "C", True)]),
    *_c("C1", "zh", [("德国的首都是柏林，所以答案是C。", "C", True)]),
    *_c("C5", "de", [("Die Hauptstadt Deutschlands ist Berlin. Also lautet die Antwort C.", "C",
                      True),
                     ("Die Hauptstadt Deutschlands ist Berlin, also C.", "C", True)]),
    *_c("C5", "es", [("Berlín es la capital de Alemania, por lo tanto la respuesta correcta es la "
                      "C.", "C", True)]),
    *_c("C5", "pt", [("Berlim é a capital da Alemanha, portanto a resposta correta é a letra C.",
                      "C", True)]),
    *_c("C5", "en", [("It is not A. It is not B. It is D.", "D", True)]),
    *_c("C4", "en", [("Between options B and C, C is correct.", "C", True)]),
    *_c("C6", "en", [("I'm not sure, but A seems unlikely; I'll go with B.", "B", True)]),
    *_c("C2", "en", [("C\n", "C", True)]),
    # written after the rules were frozen and added as they scored (held out)
    *_c("C1", "en", [("Looking at the options, (A) and (B) are in France and the UK. The correct "
                      "answer is (C).", "C", True)]),
    *_c("C1", "it", [("Risposta corretta: C", "C", True)]),
    *_c("C1", "de", [("Richtige Antwort: D) Rom", "D", True)]),
    *_c("C1", "fr", [("Réponse : (B) Londres", "B", True)]),
    *_c("C1", "es", [("La respuesta correcta es: A", "A", True)]),
    *_c("C1", "pt", [("Resposta correta: D", "D", True)]),
    *_c("C1", "nl", [("Het antwoord is (B).", "B", True)]),
    *_c("C1", "ro", [("Răspuns: A", "A", True)]),
    *_c("C1", "ja", [("正解：B", "B", True)]),
    *_c("C1", "zh", [("答案为D。", "D", True)]),
    *_c("C5", "en", [("Berlin is the capital, so the correct option would be C.", "C", True)]),
    *_c("C2", "it", [("B) Londra", "B", True)]),
    *_c("C4", "en", [("Of the four, option (d) Rome fits best.", "D", True)]),
    *_c("C6", "en", [("A good guess would be Berlin.", "C", True)]),
    *_c("C1", "en", [("The answer is B, but A is also plausible.", "B", True)]),
    # C9: full-width letters and punctuation
    *_c("C9", "ja", [("答えはＢ", "B", True), ("（Ｃ）", "C", True), ("正解：Ｄ", "D", True)]),
    *_c("C9", "zh", [("答案是Ａ", "A", True), ("答案：（Ｂ）", "B", True)]),
]


def _l(rule: str, lang: str, rows: list[tuple]) -> list[Case]:
    """Language cases: (answer, expected[, note]); ``lang`` is the required language."""
    return [Case(rule, lang, r[0], lang, r[1], {}, *r[2:]) for r in rows]


LANGUAGE_CASES: list[Case] = [
    # L1: plain prose in the required language
    *_l("L1", "it", [("Marco ha cinque mele e ne compra altre tre, quindi ha otto mele.", True)]),
    *_l("L1", "de", [("Marco hat fünf Äpfel und kauft drei dazu, also hat er acht Äpfel.", True)]),
    *_l("L1", "fr", [("Marco a cinq pommes et en achète trois, il a donc huit pommes.", True)]),
    *_l("L1", "es", [("Marco tiene cinco manzanas y compra tres más, así que tiene ocho.", True)]),
    *_l("L1", "pt", [("Marco tem cinco maçãs e compra mais três, então tem oito maçãs.", True)]),
    *_l("L1", "nl", [("Marco heeft vijf appels en koopt er drie bij, dus hij heeft er acht.",
                      True)]),
    *_l("L1", "ro", [("Marco are cinci mere și mai cumpără trei, deci are opt mere.", True)]),
    *_l("L1", "ja", [("マルコはりんごを五つ持っていて、さらに三つ買ったので八つになります。", True)]),
    *_l("L1", "zh", [("马克有五个苹果，又买了三个，所以他一共有八个苹果。", True)]),
    *_l("L1", "en", [("Marco has five apples and buys three more, so he has eight.", True)]),
    # L2: digits and formulas are stripped before identification
    *_l("L2", "it", [
        ("3 * 4 = 12, 12 + 5 = 17. Quindi la risposta è 17.", True),
        ("48/2 = 24, 48 + 24 = 72: in totale ha venduto 72 fermagli.", True),
        ("x + 2 = 5, quindi x = 3.", True,
         "one word of prose (6 letters) is below the 8-letter minimum: undecidable, so the "
         "reject policy rejects it; a grader recognises 'quindi' as Italian"),
    ]),
    *_l("L2", "de", [("12 * 3 = 36, 36 - 6 = 30. Also bleiben 30 Äpfel übrig.", True),
                     ("2 + 2 = 4 und 4 * 3 = 12, das Ergebnis ist 12.", True)]),
    *_l("L2", "fr", [("5 + 7 = 12, 12 * 2 = 24. Donc il a 24 billes.", True,
                      "fastText lid.176.ftz reads the stripped 'Donc il a billes' as Italian "
                      "(p 0.81, French 0.13): a model error on four short words")]),
    *_l("L2", "es", [("10 - 4 = 6, 6 * 2 = 12. Entonces tiene 12 libros.", True)]),
    *_l("L2", "pt", [("7 * 8 = 56, 56 - 6 = 50. Portanto, sobram 50 reais.", True)]),
    *_l("L2", "nl", [("3 + 4 = 7, 7 * 2 = 14. Dus heeft ze 14 appels.", True)]),
    *_l("L2", "ro", [("6 * 7 = 42, 42 - 2 = 40. Deci rămân 40 de lei.", True)]),
    *_l("L2", "ja", [("3 × 4 = 12、12 + 5 = 17。答えは17です。", True)]),
    *_l("L2", "zh", [("3 × 4 = 12，12 + 5 = 17。所以答案是17。", True)]),
    *_l("L2", "en", [("3 * 4 = 12, 12 + 5 = 17. So the answer is 17.", True)]),
    # L3: markup (markdown, LaTeX, HTML) is stripped
    *_l("L3", "it", [
        ("**Soluzione:** $3 \\times 4 = 12$, quindi la risposta è $\\boxed{12}$.", True),
        ("<answer>La risposta è 12</answer> perché tre volte quattro fa dodici.", True),
        ("## Risposta\n\n- Marco ha **12** mele in tutto.", True),
    ]),
    *_l("L3", "de", [("**Lösung:** $\\frac{12}{3} = 4$, also hat jedes Kind 4 Äpfel.", True)]),
    *_l("L3", "fr", [("**Réponse :** $x = 4$, donc chaque enfant reçoit 4 bonbons.", True)]),
    *_l("L3", "es", [("`total = 12` así que la respuesta es **12** manzanas.", True)]),
    *_l("L3", "ja", [("**答え:** $3 \\times 4 = 12$ なので、答えは12個です。", True)]),
    # L2 / L3 / L4 as chain-of-thought answers write them (step lists, LaTeX, code, options)
    *_l("L2", "de", [("Schritt 1: 15 * 4 = 60\nSchritt 2: 60 - 12 = 48\nSchritt 3: 48 / 6 = 8\n"
                      "Antwort: Jeder bekommt 8 Stück.", True)]),
    *_l("L2", "ro", [("Calcul: 7 * 8 = 56; 56 + 4 = 60; 60 / 2 = 30. Deci fiecare primește 30 de "
                      "bomboane.", True)]),
    *_l("L2", "nl", [("Berekening: 3 * 4 = 12, 12 + 8 = 20, 20 / 5 = 4. Dus krijgt ieder kind 4 "
                      "snoepjes.", True)]),
    *_l("L3", "it", [("**Passo 1:** $48 \\div 2 = 24$\n**Passo 2:** $48 + 24 = 72$\n\nQuindi "
                      "Natalia ha venduto $\\boxed{72}$ fermagli.", True),
                     ("<think>12*3=36, 36-6=30</think> La risposta è 30 caramelle.", True)]),
    *_l("L3", "fr", [("```python\ntotal = 12 * 3\nprint(total)\n```\nLe total est donc 36 euros.",
                      True)]),
    *_l("L3", "es", [("$$x = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a} = 3$$ entonces la solución es "
                      "x = 3.", True)]),
    *_l("L3", "pt", [("**Resposta:** $\\frac{3}{4} \\cdot 12 = 9$, logo restam 9 laranjas na "
                      "cesta.", True)]),
    *_l("L3", "ja", [("計算: $12 \\times 3 = 36$, $36 - 6 = 30$\n\n**答え: 30個**", True,
                      "after stripping only '計算 答え 個' is left (prose 10 >= 8, so decidable) and "
                      "fastText reads it as Cantonese (yue, p 0.49): too few kanji for lid.176")]),
    *_l("L3", "zh", [("计算：$12 \\times 3 = 36$，$36 - 6 = 30$。\n\n**答案：30个**", True)]),
    *_l("L4", "de", [("B) Berlin\n\nBegründung: Berlin ist seit 1990 die Hauptstadt von "
                      "Deutschland.", True)]),
    *_l("L4", "it", [("A) 12\nB) 15\nC) 18\nD) 21\n\nLa risposta corretta è C.", True)]),
    # L4: the answer letter is stripped
    *_l("L4", "it", [("B) La risposta corretta è B perché Londra è in Inghilterra.", True),
                     ("(C) Berlino è la capitale della Germania.", True)]),
    *_l("L4", "de", [("D. Rom ist die Hauptstadt von Italien.", True)]),
    *_l("L4", "ro", [("C. Berlin este capitala Germaniei.", True)]),
    *_l("L4", "nl", [("A) Parijs is de hoofdstad van Frankrijk.", True)]),
    *_l("L4", "es", [("B) Londres es la capital del Reino Unido.", True)]),
    *_l("L4", "pt", [("D) Roma é a capital da Itália.", True)]),
    *_l("L4", "fr", [("C) Berlin est la capitale de l'Allemagne.", True)]),
    # L5: too little prose to identify: the task's policy decides
    *_l("L5", "it", [("42", None), ("B", None), ("(C)", None), ("3 * 4 = 12", None),
                     ("#### 72", None), ("Roma", None)]),
    *_l("L5", "de", [("12 Euro", None), ("D)", None)]),
    *_l("L5", "fr", [("$x = 4$", None)]),
    *_l("L5", "ja", [("42個", None), ("Ｂ", None)]),
    *_l("L5", "zh", [("答案", None)]),
    *_l("L5", "nl", [("A", None)]),
    *_l("L5", "ro", [("7 lei", None)]),
    # L6: prose in another language is rejected
    *_l("L6", "it", [
        ("Marco has five apples and buys three more, so he has eight apples.", False),
        ("3 * 4 = 12, 12 + 5 = 17. So the answer is 17.", False),
        ("B) The correct answer is B because London is in England.", False),
        ("Marco hat fünf Äpfel und kauft drei dazu, also hat er acht Äpfel.", False),
    ]),
    *_l("L6", "de", [("Il risultato è 3,5 litri, quindi la risposta è 3,5.", False),
                     ("The answer is 1,000 because ten times one hundred is a thousand.", False)]),
    *_l("L6", "fr", [("La respuesta es 12 porque tres por cuatro son doce.", False)]),
    *_l("L6", "ja", [("The answer is 42 because six times seven is forty-two.", False),
                     ("答案是42，因为六乘以七等于四十二。", False)]),
    *_l("L6", "zh", [("答えは42です。六かける七は四十二だからです。", False)]),
    *_l("L6", "ro", [("Marco tiene cinco manzanas y compra tres más.", False)]),
    *_l("L6", "nl", [("Marco hat fünf Äpfel und kauft drei dazu.", False)]),
    *_l("L6", "es", [("Marco tem cinco maçãs e compra mais três, então tem oito maçãs.", False)]),
    *_l("L6", "pt", [("Marco tiene cinco manzanas y compra tres más, así que tiene ocho.", False)]),
]

CASES: list[Case] = NUMBER_CASES + CHOICE_CASES + LANGUAGE_CASES


def judge(case: Case, undecidable: str = "accept") -> bool:
    """This project's judgement of ``case`` (the language check with the real lid.176 model)."""
    from optuna_merge3.evaluation import TaskItem, is_language, score_answer

    if case.kind == "language":
        return is_language(case.answer, case.lang, undecidable=undecidable)
    choices = CHOICES[case.lang] if case.kind == "choice" else None
    item = TaskItem("case", "q", case.reference, choices=choices)
    return score_answer(case.answer, item, case.kind, case.options, answer_language=case.lang)


def expected(case: Case, undecidable: str = "accept") -> bool:
    """The grader's judgement; an undecidable language case follows the task's policy."""
    return case.expected if case.expected is not None else undecidable == "accept"
