"""The facts behind the synthetic dataset: small tables, each fact written in several tutor phrasings.

A fact is one row of a relation ("mitochondrion" -> "making energy" in the parts-of-the-cell relation), one
sum or difference of small numbers, or one ordering puzzle. Every fact carries

  - explanations: the same fact in 3-4 phrasings, one per template of its relation. Two phrasings of one fact
    share the meaning but few words; the same template applied to two facts of a relation shares most words.
    That gap between lexical overlap (ROUGE-L) and meaning is what the semantic reward is meant to see through;
  - note: a terse line ("Recall: mitochondrion - making energy") that the SFT reasoning and the corpus both use;
  - terms: the words every phrasing states (entity and value; the numbers of a sum; the three names of a
    puzzle), which a reference-grounded judge can look for in an explanation;
  - probes: the questions that test it, each with its answer text and the wrong options to draw from.

Logic puzzles state their premises in the question, so they are the only facts left out of the textbook corpus
(in_corpus=False).
"""

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """One question about a fact: its text, the correct option text, and the pool of wrong option texts."""

    question: str
    answer: str
    distractors: tuple


@dataclass(frozen=True)
class Fact:
    """One fact with every phrasing of it (see the module docstring)."""

    key: str             # unique: "cell/ribosome", "sum/3+4", "logic/taller/Ann>Bob>Cal/top"
    subject: str
    relation: str        # facts of one relation share explanation templates, index for index
    topic: str           # what the reasoning says the question is about
    explanations: tuple  # the tutor phrasings, one per template of the relation
    note: str            # terse recall line, used by the reasoning and the corpus glossary
    probes: tuple        # Probe, ...
    in_corpus: bool = True
    terms: tuple = ()    # the words every phrasing states: ("mitochondrion", "making energy"), ("3", "4", "7")


@dataclass(frozen=True)
class _Relation:
    """A table of (entity, value) rows with its question and explanation templates.

    Templates use {e} and {v}, {a_e} / {a_v} with an article, {v_pl} for a plural, and capitalised {E} / {V} /
    {A_e} at the start of a sentence. A question's direction says whether its answer is the value or the entity.
    """

    name: str
    subject: str
    topic: str
    rows: tuple                  # (entity, value) pairs
    questions: tuple             # (template, "value" | "entity")
    explanations: tuple          # templates
    plurals: tuple = ()          # (value, plural) pairs, for {v_pl}


def _article(word):
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _cap(text):
    return text[:1].upper() + text[1:]


_RELATIONS = (
    _Relation(
        "cell", "biology", "parts of the cell",
        rows=(("mitochondrion", "making energy"), ("ribosome", "building proteins"), ("nucleus", "storing DNA"),
              ("chloroplast", "capturing sunlight"), ("cell membrane", "controlling what gets in"),
              ("vacuole", "storing water"), ("lysosome", "breaking down waste"),
              ("cell wall", "shaping plant cells")),
        questions=(("Which part of the cell is in charge of {v}?", "entity"),
                   ("What is the main job of the {e}?", "value")),
        explanations=("The {e} is the part of the cell in charge of {v}.",
                      "{V} is the main job of the {e}.",
                      "A cell relies on its {e} for {v}.",
                      "Without a working {e}, a cell would fail at {v}.")),
    _Relation(
        "organ", "biology", "organs of the body",
        rows=(("heart", "pumping blood"), ("lungs", "taking in oxygen"), ("stomach", "digesting food"),
              ("kidneys", "filtering the blood"), ("brain", "controlling the body"), ("skin", "protecting the body"),
              ("bones", "supporting the body"), ("muscles", "moving the body"), ("eyes", "detecting light"),
              ("ears", "detecting sound")),
        questions=(("Which organ is responsible for {v}?", "entity"),
                   ("What is the role of the {e}?", "value")),
        explanations=("In the body, {v} is the work of the {e}.",
                      "The body depends on the {e} for {v}.",
                      "{V} is handled by the {e}.",
                      "If the {e} stopped working, {v} would stop too.")),
    _Relation(
        "animal", "biology", "animal groups",
        rows=(("whale", "mammal"), ("shark", "fish"), ("frog", "amphibian"), ("eagle", "bird"), ("snake", "reptile"),
              ("bat", "mammal"), ("salmon", "fish"), ("toad", "amphibian"), ("owl", "bird"), ("lizard", "reptile"),
              ("dolphin", "mammal"), ("turtle", "reptile"), ("penguin", "bird"), ("newt", "amphibian"),
              ("tuna", "fish"), ("horse", "mammal")),
        questions=(("To which animal group does the {e} belong?", "value"),
                   ("Which of these animals is {a_v}?", "entity")),
        explanations=("The {e} belongs to the group of {v_pl}.",
                      "Biologists classify the {e} as {a_v}.",
                      "One example of {a_v} is the {e}."),
        plurals=(("mammal", "mammals"), ("fish", "fish"), ("amphibian", "amphibians"), ("bird", "birds"),
                 ("reptile", "reptiles"))),
    _Relation(
        "symbol", "chemistry", "chemical symbols",
        rows=(("oxygen", "O"), ("hydrogen", "H"), ("carbon", "C"), ("nitrogen", "N"), ("sodium", "Na"),
              ("iron", "Fe"), ("gold", "Au"), ("silver", "Ag"), ("helium", "He"), ("calcium", "Ca"),
              ("potassium", "K"), ("copper", "Cu"), ("lead", "Pb"), ("chlorine", "Cl"), ("neon", "Ne"),
              ("zinc", "Zn")),
        questions=(("What is the chemical symbol for {e}?", "value"),
                   ("Which element has the symbol {v}?", "entity")),
        explanations=("The chemical symbol for {e} is {v}.",
                      "Chemists write {e} as {v}.",
                      "On the periodic table, {v} stands for {e}.")),
    _Relation(
        "formula", "chemistry", "chemical formulas",
        rows=(("water", "H2O"), ("carbon dioxide", "CO2"), ("table salt", "NaCl"), ("methane", "CH4"),
              ("ammonia", "NH3"), ("carbon monoxide", "CO"), ("ozone", "O3"), ("hydrogen peroxide", "H2O2"),
              ("sulfuric acid", "H2SO4"), ("baking soda", "NaHCO3")),
        questions=(("What is the formula of {e}?", "value"),
                   ("Which substance has the formula {v}?", "entity")),
        explanations=("The formula of {e} is {v}.",
                      "Chemists describe one unit of {e} with {v}.",
                      "{v} is how {e} is written in chemistry.")),
    _Relation(
        "unit", "physics", "units of measurement",
        rows=(("force", "newton"), ("energy", "joule"), ("power", "watt"), ("electric current", "ampere"),
              ("voltage", "volt"), ("resistance", "ohm"), ("frequency", "hertz"), ("pressure", "pascal"),
              ("electric charge", "coulomb"), ("temperature", "kelvin"), ("mass", "kilogram"),
              ("length", "metre"), ("time", "second")),
        questions=(("What is the SI unit of {e}?", "value"),
                   ("Which quantity has the {v} as its SI unit?", "entity")),
        explanations=("The SI unit of {e} is the {v}.",
                      "Physicists measure {e} in {v_pl}.",
                      "A value of {e} is given as a number of {v_pl}."),
        plurals=(("newton", "newtons"), ("joule", "joules"), ("watt", "watts"), ("ampere", "amperes"),
                 ("volt", "volts"), ("ohm", "ohms"), ("hertz", "hertz"), ("pascal", "pascals"),
                 ("coulomb", "coulombs"), ("kelvin", "kelvins"), ("kilogram", "kilograms"), ("metre", "metres"),
                 ("second", "seconds"))),
    _Relation(
        "instrument", "physics", "measuring instruments",
        rows=(("thermometer", "temperature"), ("barometer", "air pressure"), ("ammeter", "electric current"),
              ("voltmeter", "voltage"), ("ruler", "length"), ("clock", "time"), ("speedometer", "speed"),
              ("compass", "direction"), ("balance", "mass"), ("rain gauge", "rainfall")),
        questions=(("What does {a_e} measure?", "value"),
                   ("Which instrument measures {v}?", "entity")),
        explanations=("{A_e} is the instrument used to measure {v}.",
                      "To find {v}, you read {a_e}.",
                      "{V} can be read off {a_e}.")),
    _Relation(
        "capital", "geography", "capital cities",
        rows=(("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
              ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Canada", "Ottawa"), ("Germany", "Berlin"),
              ("Greece", "Athens"), ("Norway", "Oslo"), ("China", "Beijing"), ("Russia", "Moscow"),
              ("Portugal", "Lisbon"), ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Chile", "Santiago"),
              ("Cuba", "Havana"), ("Sweden", "Stockholm"), ("Austria", "Vienna")),
        questions=(("What is the capital of {e}?", "value"),
                   ("{v} is the capital of which country?", "entity")),
        explanations=("The capital of {e} is {v}.",
                      "{v} is the city where the government of {e} sits.",
                      "{e} is run from its capital city, {v}.")),
    _Relation(
        "continent", "geography", "continents",
        rows=(("France", "Europe"), ("Japan", "Asia"), ("Egypt", "Africa"), ("Kenya", "Africa"),
              ("Peru", "South America"), ("Canada", "North America"), ("China", "Asia"),
              ("Chile", "South America"), ("Cuba", "North America"), ("Australia", "Oceania"), ("India", "Asia"),
              ("Brazil", "South America"), ("Nigeria", "Africa"), ("Mexico", "North America"),
              ("Norway", "Europe"), ("Fiji", "Oceania")),
        questions=(("On which continent is {e}?", "value"),
                   ("Which of these countries is in {v}?", "entity")),
        explanations=("{e} is a country in {v}.",
                      "On a map of the world, you find {e} in {v}.",
                      "{v} is the continent that includes {e}.")),
)


def _fields(rel, entity, value):
    plural = dict(rel.plurals)
    f = {"e": entity, "v": value, "a_e": _article(entity), "a_v": _article(value), "v_pl": plural.get(value, "")}
    f.update(E=_cap(entity), V=_cap(value), A_e=_cap(f["a_e"]))
    return f


def knowledge_facts():
    """Every row of every relation table as a Fact, in table order."""
    facts = []
    for rel in _RELATIONS:
        for entity, value in rel.rows:
            f = _fields(rel, entity, value)
            probes = []
            for template, direction in rel.questions:
                if direction == "value":
                    wrong = sorted({v for _, v in rel.rows if v != value})
                    probes.append(Probe(_cap(template.format(**f)), value, tuple(wrong)))
                else:
                    # Only entities with another value: the question must have exactly one right option.
                    wrong = [e for e, v in rel.rows if v != value]
                    probes.append(Probe(_cap(template.format(**f)), entity, tuple(wrong)))
            facts.append(Fact(
                key=f"{rel.name}/{entity}", subject=rel.subject, relation=rel.name, topic=rel.topic,
                explanations=tuple(_cap(t.format(**f)) for t in rel.explanations),
                note=f"Recall: {entity} - {value}", probes=tuple(probes), terms=(entity, value)))
    return facts


_ARITHMETIC = {
    "sum": dict(topic="addition", symbol="+",
                questions=("What is {a} + {b}?", "What do you get when you add {a} and {b}?"),
                explanations=("Adding {a} and {b} gives {r}.", "{a} plus {b} equals {r}.",
                              "Counting up {steps} from {a} lands on {r}.", "The total of {a} and {b} is {r}.")),
    "difference": dict(topic="subtraction", symbol="-",
                       questions=("What is {a} - {b}?", "What is left when you take {b} away from {a}?"),
                       explanations=("Taking {b} away from {a} leaves {r}.", "{a} minus {b} equals {r}.",
                                     "Counting down {steps} from {a} lands on {r}.",
                                     "The difference between {a} and {b} is {r}.")),
}


def arithmetic_facts():
    """a + b for 1 <= a <= b <= 9 and a - b for 1 <= b < a <= 10: 45 facts each, answers computable."""
    pairs = {"sum": [(a, b) for a in range(1, 10) for b in range(a, 10)],
             "difference": [(a, b) for a in range(2, 11) for b in range(1, a)]}
    facts = []
    for name, spec in _ARITHMETIC.items():
        for a, b in pairs[name]:
            r = a + b if name == "sum" else a - b
            # Wrong options are the nearby numbers: the tempting slips of someone who miscounts.
            wrong = tuple(str(n) for n in range(max(0, r - 3), r + 4) if n != r)
            f = {"a": a, "b": b, "r": r, "steps": f"{b} step" + ("" if b == 1 else "s")}
            facts.append(Fact(
                key=f"{name}/{a}{spec['symbol']}{b}", subject="arithmetic", relation=name, topic=spec["topic"],
                explanations=tuple(t.format(**f) for t in spec["explanations"]),
                note=f"Compute: {a} {spec['symbol']} {b} = {r}",
                probes=tuple(Probe(q.format(**f), str(r), wrong) for q in spec["questions"]),
                terms=tuple(dict.fromkeys((str(a), str(b), str(r))))))
    return facts


# (comparative, its inverse, superlative of the first, superlative of the last, topic)
_ORDERINGS = (("taller", "shorter", "tallest", "shortest", "height"),
              ("older", "younger", "oldest", "youngest", "age"),
              ("faster", "slower", "fastest", "slowest", "speed"),
              ("heavier", "lighter", "heaviest", "lightest", "weight"))
NAMES = ("Ann", "Bob", "Cal", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lee")
_LOGIC_EXPLANATIONS = ("{x} is {cmp} than {y}, and {y} is {cmp} than {z}, so {ans} is the {sup}.",
                       "From {top} to {bottom} the order is {x}, {y}, {z}, so the {sup} is {ans}.",
                       "Nobody is {beyond} than {ans}, since {y} stands between {x} and {z}; {ans} is the {sup}.")


def logic_facts(rng, n):
    """Up to `n` distinct ordering puzzles ("Ann is taller than Bob. ... Who is the tallest?"), drawn with `rng`.

    The puzzle is the fact: its key names the comparative, the order of three people and whether the question
    asks for the first or the last. Its wording (which premise comes first, and whether a premise uses the
    inverse comparative) is drawn once, so a puzzle has one question. There are 4 * 12*11*10 * 2 = 10560.
    """
    keys = [(ordering, xyz, ask) for ordering in _ORDERINGS for xyz in itertools.permutations(NAMES, 3)
            for ask in ("top", "bottom")]
    rng.shuffle(keys)
    facts = []
    for (cmp, inv, top, bottom, topic), (x, y, z), ask in keys[:n]:
        premises = [f"{a} is {cmp} than {b}." if rng.random() < 0.5 else f"{b} is {inv} than {a}."
                    for a, b in ((x, y), (y, z))]
        rng.shuffle(premises)
        sup, ans, beyond = (top, x, cmp) if ask == "top" else (bottom, z, inv)
        outsider = rng.choice([name for name in NAMES if name not in (x, y, z)])
        f = dict(x=x, y=y, z=z, cmp=cmp, top=top, bottom=bottom, sup=sup, ans=ans, beyond=beyond)
        question = f"{' '.join(premises)} Who is the {sup}?"
        wrong = tuple(name for name in (x, y, z, outsider) if name != ans)
        facts.append(Fact(
            key=f"logic/{cmp}/{x}>{y}>{z}/{ask}", subject="logic", relation=f"logic/{cmp}", topic=topic,
            explanations=tuple(t.format(**f) for t in _LOGIC_EXPLANATIONS),
            note=f"Order from {top}: {x}, {y}, {z}", probes=(Probe(question, ans, wrong),), in_corpus=False,
            terms=(x, y, z)))
    return facts


def logic_rules():
    """Textbook paragraphs stating the ordering rules the logic puzzles rely on, one per comparative."""
    return [f"When one person is {cmp} than a second, and the second is {cmp} than a third, the first is the "
            f"{top} and the third is the {bottom}. Saying that one person is {inv} than another means the other "
            f"is {cmp}." for cmp, inv, top, bottom, _ in _ORDERINGS]

