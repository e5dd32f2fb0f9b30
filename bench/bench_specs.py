"""Benchmark the spec checker: the labelled corpora, quantulum3's annotated sentences, pairs per second.

Usage:
    .venv/bin/python bench/bench_specs.py                    # about 20 s
    .venv/bin/python bench/bench_specs.py --baseline 3d703a3 # also the checker as it was at that commit

Four measurements, printed as Markdown tables (BENCHMARKS.md quotes them):

1. Agreement with tests/data/spec_cases.jsonl, a corpus labelled by a strict grader: per class,
   false passes (the checker passes a case the grader fails), false fails, and "not applicable"
   disagreements.
2. The same agreement on tests/data/spec_cases_manuals.jsonl, per category and per manual kind. Its
   (reference, answer) pairs were written from the notations real manuals print, kind by kind
   (Toyota's N·m {kgf·cm, ft·lbf} braces, Haynes' lbf ft and thou, German 22…25 Nm and mind.,
   French 0,20 à 0,25 mm and maxi, Japanese 0.7〜0.8 mm, aircraft psig and in-lb, motorcycle,
   outboard, tractor, wiring and small-engine manuals), and labelled by a grader who never saw the
   checker or ran it while writing them; each case carries its manual kind and its category.
   tests/data/spec_cases_holdout.jsonl, a second set written the same way after the checker was
   built (Italian and Spanish manuals, HVAC, aviation, electrical test values, ...), per category.
3. Extraction against outside material: the annotated English test sentences shipped in the
   quantulum3 package (quantities.json, quantities.ambiguity.json; a dev dependency), limited to
   the dimensions the checker reads (QUANTULUM_UNITS: lengths, volumes, temperatures, angles, mass,
   time, speeds, power, energy, frequency, area, percent, ...; not currencies, data sizes or
   counts). A quantity the checker extracts is correct when its span overlaps an
   annotated one and its value, converted by pint, equals the annotated value (the midpoint for a
   range, as quantulum3 annotates ranges). Bracketed equivalents count as quantities of their own.
   Precision = correct / extracted; recall = annotated in-dimension quantities found / all of them.
4. match() pairs per second on one core: CPU time (time.process_time) over the first corpus's pairs, so
   other processes on a shared machine do not count; wall-clock is printed beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import specs  # noqa: E402

CASES = ROOT / "tests" / "data" / "spec_cases.jsonl"
MANUAL_CASES = ROOT / "tests" / "data" / "spec_cases_manuals.jsonl"  # grouped by category and by manual kind
# A second set written the same way, after the checker was built, by a grader who never saw it (measured as it came).
HOLDOUT_CASES = ROOT / "tests" / "data" / "spec_cases_holdout.jsonl"
GOAL_CLASSES = ("value", "unit", "sequence", "qualifier")  # zero false passes required here

# quantulum3's unit names -> (dimension, pint unit); every other annotated unit is out of the checker's families.
QUANTULUM_UNITS = {
    "inch": ("length", "inch"), "metre": ("length", "meter"), "kilometre": ("length", "kilometer"),
    "mile": ("length", "mile"), "nanometre": ("length", "nanometer"), "picometre": ("length", "picometer"),
    "attometre": ("length", "attometer"),
    "litre": ("volume", "liter"), "centilitre": ("volume", "centiliter"), "cubic centimetre": ("volume", "cubic_centimeter"),
    "gallon": ("volume", "gallon"), "cup": ("volume", "cup"), "tablespoon": ("volume", "tablespoon"),
    "cubic kilometre": ("volume", "kilometer ** 3"),
    "degree Celsius": ("temperature", "degree_Celsius"), "degree fahrenheit": ("temperature", "degree_Fahrenheit"),
    "degree Fahrenheit": ("temperature", "degree_Fahrenheit"), "kelvin": ("temperature", "kelvin"),
    "minute of arc": ("angle", "arcminute"), "second of arc": ("angle", "arcsecond"),
    # Read since every unit pint knows is read: mass, time, speed, power, energy, frequency, area, percent ...
    "milligram": ("mass", "milligram"), "kilogram": ("mass", "kilogram"), "pound-mass": ("mass", "pound"),
    "tonne": ("mass", "metric_ton"),
    "second": ("time", "second"), "minute": ("time", "minute"), "hour": ("time", "hour"), "day": ("time", "day"),
    "week": ("time", "week"), "month": ("time", "month"), "year": ("time", "year"),
    "kilometre per hour": ("road speed", "kilometer / hour"), "percentage": ("percent", "percent"),
    "watt": ("power", "watt"), "watt hour": ("energy", "watt_hour"), "megawatt hour": ("energy", "megawatt_hour"),
    "electronvolt": ("energy", "electron_volt"), "teraelectronvolt": ("energy", "teraelectron_volt"),
    "gigahertz": ("frequency", "gigahertz"), "inverse second": ("frequency", "1 / second"),
    "square kilometre": ("area", "kilometer ** 2"), "square mile": ("area", "mile ** 2"),
    "kilometre per square second": ("acceleration", "kilometer / second ** 2"),
    "kilogram per cubic centimetre": ("density", "kilogram / centimeter ** 3"),
    "litre per kilometre": ("consumption", "liter / kilometer"), "gray": ("dose", "gray"), "milligray": ("dose", "milligray"),
    "watt per minute": ("power per time", "watt / minute"),
}
# Units a workshop manual states specifications in (the second recall row).
WORKSHOP_UNITS = {"inch", "metre", "kilometre", "mile", "litre", "cubic centimetre", "gallon", "degree Celsius",
                  "degree fahrenheit", "degree Fahrenheit", "kilogram", "pound-mass", "second", "minute", "hour",
                  "kilometre per hour", "percentage", "watt"}


def load_checker(revision: str | None) -> ModuleType:
    if revision is None:
        return specs
    shown = subprocess.run(["git", "show", f"{revision}:harness/specs.py"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        sys.exit(f"--baseline {revision}: git cannot show harness/specs.py at that revision ({shown.stderr.strip()}).")
    source = shown.stdout
    path = Path(tempfile.mkdtemp()) / f"specs_{revision}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def load_cases(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_agreement(checker: ModuleType, path: Path = CASES, keys: tuple[str, ...] = ("class",)) -> dict:
    """Agreement rows per value of each key (a case field: class, category, manual), and their total."""
    rows: dict[str, dict[str, Counter]] = {key: defaultdict(Counter) for key in keys}
    total: Counter = Counter()
    wrong: list[str] = []
    for case in load_cases(path):
        result = checker.match(case["expected"], case["actual"])
        verdict = result.passed if result.applicable else None
        if verdict == case["passed"]:
            kind = "agree"
        else:
            kind = ("false pass" if verdict is True and case["passed"] is False else
                    "false fail" if verdict is False and case["passed"] is True else "applicability")
            groups = " ".join([case["class"]] + [case[key] for key in keys if key != "class"])
            wrong.append(f"{case['id']} {groups}: {kind}: {case['expected']!r} / {case['actual']!r} ({case['note']})")
        for row in [rows[key][case[key]] for key in keys] + [total]:
            row["n"] += 1
            row[kind] += 1
    return {"rows": {key: dict(by_value) for key, by_value in rows.items()}, "total": total, "wrong": wrong}


def agreement_table(heading: str, rows: dict[str, Counter], total: Counter) -> None:
    print(f"| {heading} | cases | agree | false passes | false fails | applicability |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in sorted(rows.items()):
        print(f"| {name} | {row['n']} | {_percent(row['agree'], row['n'])} | {row['false pass']} | {row['false fail']} | {row['applicability']} |")
    print(f"| **all** | {total['n']} | **{_percent(total['agree'], total['n'])}** | {total['false pass']} | "
          f"{total['false fail']} | {total['applicability']} |")


def quantulum_sentences() -> list[dict]:
    found = importlib.util.find_spec("quantulum3")
    if found is None:
        sys.exit("quantulum3 is not installed: pip install -e '.[dev]' (it is a dev dependency), then run again.")
    tests = Path(next(iter(found.submodule_search_locations))) / "_lang" / "en_US" / "tests"
    sentences = []
    for name in ("quantities.json", "quantities.ambiguity.json"):
        sentences += [{**s, "file": name} for s in json.loads((tests / name).read_text(encoding="utf-8"))]
    return sentences


def _spans(checker: ModuleType, text: str, quantities: list) -> list[tuple[int, int, object]]:
    """(start, end, quantity) for each extracted quantity and each of its equivalents, in the prepared text."""
    out, cursor = [], 0
    for q in quantities:
        for item in (q, *getattr(q, "equivalents", ())):
            start = getattr(item, "start", None)
            if start is None or (start == 0 and getattr(item, "end", 0) == 0):  # an older checker: locate by text
                start = text.find(item.raw.split(" (")[0], cursor)
                end = start + len(item.raw.split(" (")[0])
            else:
                end = item.end
            cursor = max(cursor, start)
            out.append((start, end, item))
    return out


def _value_agrees(quantity, gold_value: float, gold_unit: str) -> bool:
    import pint

    registry = specs._registry()
    readings = getattr(quantity, "readings", None) or [(quantity.value, quantity.high)]
    units = getattr(quantity, "units", None) or (specs.CANONICAL_UNIT.get(quantity.family, ""),)
    if not getattr(quantity, "readings", None):  # an older checker keeps canonical values only
        units = ({"length": "millimeter", "torque": "newton * meter", "angle": "degree", "pressure": "bar",
                  "volume": "liter", "temperature": "degree_Celsius"}.get(quantity.family, "dimensionless"),)
    for unit in units:
        for reading in readings:
            low, high = reading[0], reading[1]
            mid = low if high is None else (low + high) / 2
            try:
                value = registry.Quantity(mid, unit).to(gold_unit).magnitude
            except (pint.errors.DimensionalityError, pint.errors.UndefinedUnitError):
                continue
            if abs(value - gold_value) <= 1e-3 * max(abs(gold_value), 1e-9) + 1e-9:
                return True
    return False


def check_unit_names() -> None:
    """Every pint name above must parse: one that does not would score its annotations as misses, silently."""
    import pint

    registry = specs._registry()
    for name, (_, unit) in QUANTULUM_UNITS.items():
        try:
            registry.Unit(unit)
        except pint.errors.UndefinedUnitError:
            sys.exit(f"QUANTULUM_UNITS[{name!r}] = {unit!r}: pint does not know that unit; fix the table.")


def extraction_scores(checker: ModuleType) -> dict:
    check_unit_names()
    extracted: Counter = Counter()
    correct: Counter = Counter()
    gold_all: Counter = Counter()
    gold_found: Counter = Counter()
    errors: list[str] = []
    for sentence in quantulum_sentences():
        text = specs._prepare(sentence["req"])
        predictions = _spans(checker, text, checker.extract_quantities(sentence["req"]))
        gold, cursor = [], 0
        for annotation in sentence["res"]:
            surface = specs._prepare(annotation["surface"])
            start = text.find(surface, cursor)
            if start == -1:
                start = text.find(surface)
            cursor = max(cursor, start + 1)
            gold.append((start, start + len(surface), annotation))
        hit_gold: set[int] = set()
        for start, end, quantity in predictions:
            extracted["all"] += 1
            extracted[sentence["file"]] += 1
            ok = False
            for k, (g_start, g_end, annotation) in enumerate(gold):
                unit = QUANTULUM_UNITS.get(annotation["unit"])
                if unit and start < g_end and g_start < end and _value_agrees(quantity, float(annotation["value"]), unit[1]):
                    ok = True
                    hit_gold.add(k)
                    break
            correct["all"] += ok
            correct[sentence["file"]] += ok
            if not ok:
                errors.append(f"extracted {quantity.raw!r} ({quantity.family}) in {sentence['req'][:90]!r}")
        for k, (_, _, annotation) in enumerate(gold):
            unit = QUANTULUM_UNITS.get(annotation["unit"])
            if not unit:
                continue
            for tier in ("all", unit[0]) + (("workshop",) if annotation["unit"] in WORKSHOP_UNITS else ()):
                gold_all[tier] += 1
                gold_found[tier] += k in hit_gold
            if k not in hit_gold:
                errors.append(f"missed {annotation['surface']!r} ({annotation['unit']}) in {sentence['req'][:90]!r}")
    return {"extracted": extracted, "correct": correct, "gold": gold_all, "found": gold_found, "errors": errors}


def pairs_per_second(checker: ModuleType, seconds: float = 4.0) -> tuple[float, float]:
    cases = load_cases(CASES)
    pairs = [(c["expected"], c["actual"]) for c in cases]
    for expected, actual in pairs:  # warm the pint registry and the conversion cache once
        checker.match(expected, actual)
    cpu_rates, wall_rates = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        cpu, wall = time.process_time(), time.perf_counter()
        for expected, actual in pairs:
            checker.match(expected, actual)
        cpu_rates.append(len(pairs) / (time.process_time() - cpu))
        wall_rates.append(len(pairs) / (time.perf_counter() - wall))
    return statistics.median(cpu_rates), statistics.median(wall_rates)


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def report(label: str, checker: ModuleType, verbose: bool) -> None:
    corpus = corpus_agreement(checker)
    print(f"\n### {label}: labelled corpus ({corpus['total']['n']} cases)\n")
    agreement_table("class", corpus["rows"]["class"], corpus["total"])
    goal = sum(corpus["rows"]["class"].get(name, Counter())["false pass"] for name in GOAL_CLASSES)
    print(f"\nFalse passes on {', '.join(GOAL_CLASSES)} cases: {goal}")

    manuals = corpus_agreement(checker, MANUAL_CASES, ("category", "manual"))
    print(f"\n### {label}: corpus from manuals' notations ({manuals['total']['n']} cases), per category\n")
    agreement_table("category", manuals["rows"]["category"], manuals["total"])
    print(f"\n### {label}: corpus from manuals' notations, per manual kind\n")
    agreement_table("manual", manuals["rows"]["manual"], manuals["total"])
    total = manuals["total"]
    print(f"\nTotal on the manuals' corpus: {total['agree']} of {total['n']} agree ({_percent(total['agree'], total['n'])}), "
          f"{total['false pass']} false passes, {total['false fail']} false fails, {total['applicability']} applicability")

    holdout = corpus_agreement(checker, HOLDOUT_CASES, ("category", "manual"))
    print(f"\n### {label}: the second set ({holdout['total']['n']} cases), per category\n")
    agreement_table("category", holdout["rows"]["category"], holdout["total"])
    total = holdout["total"]
    print(f"\nTotal on the second set: {total['agree']} of {total['n']} agree ({_percent(total['agree'], total['n'])}), "
          f"{total['false pass']} false passes, {total['false fail']} false fails, {total['applicability']} applicability")

    extraction = extraction_scores(checker)
    print(f"\n### {label}: quantulum3's annotated sentences, in the checker's dimensions\n")
    print("| sentences | extracted | correct | precision |")
    print("|---|---:|---:|---:|")
    for name in ("quantities.json", "quantities.ambiguity.json", "all"):
        n, ok = extraction["extracted"][name], extraction["correct"][name]
        print(f"| {name} | {n} | {ok} | {_percent(ok, n)} |")
    print()
    print("| annotated quantities | n | found | recall |")
    print("|---|---:|---:|---:|")
    for tier in ["all", "workshop"] + sorted(t for t in extraction["gold"] if t not in ("all", "workshop")):
        n, found = extraction["gold"][tier], extraction["found"][tier]
        print(f"| {tier} | {n} | {found} | {_percent(found, n)} |")

    cpu, wall = pairs_per_second(checker)
    print(f"\n### {label}: throughput\n\nmatch() on the corpus pairs: {cpu:,.0f} pairs per CPU second "
          f"(one core), {wall:,.0f} pairs per wall-clock second\n")
    if verbose:
        print("Disagreements and extraction errors:")
        for line in corpus["wrong"] + manuals["wrong"] + holdout["wrong"] + extraction["errors"]:
            print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="a git revision whose harness/specs.py to measure as well")
    parser.add_argument("--verbose", action="store_true", help="list every disagreement and extraction error")
    args = parser.parse_args()
    report("this checker", specs, args.verbose)
    if args.baseline:
        report(f"checker at {args.baseline}", load_checker(args.baseline), args.verbose)
    print("Wrote nothing; BENCHMARKS.md quotes these tables. Next: make test")


if __name__ == "__main__":
    main()
