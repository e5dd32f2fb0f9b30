"""Deterministic checks of answers that state service specifications.

Usage:
    from harness.specs import match
    result = match("Stage 1: 40 Nm, Stage 2: 90°", answer_text)
    print(result.passed, result.applicable, *result.details, sep="\\n")

What is read. A quantity is a number with a unit pint knows, in any dimension: torque, angle,
length, pressure, volume, temperature, engine speed, distance (m, km, miles: intervals and cable
lengths), and resistance, voltage, current, capacitance, mass, force, power, time, road speed,
frequency, flow, percent, ratios ("10.5:1", "9,5/1", "18 to 1") and any other unit pint parses
("15 Ω", "4.7 µF", "185 cc/min", "10 mL per minute", "100 lb/in", "116,347 sq mi"). Values compare
only within a dimension (a manual's kg and kgf compare through standard gravity). Numbers:
decimals with a point or a comma, thousands grouped by comma or space, scientific notation (4e14,
5.5x10-3), fractions and mixed numbers (3/16, 2 1/2, ⅜), numbers glued to Japanese text
("使用限度は36.5 mmです"), spelled-out numbers up to the hundreds ("sixty degrees") and the words of
turns ("a quarter turn", "half a turn"). Ranges (-, –, to, ~, …, 〜, ～, bis, à, between … and …),
tolerances (±, +/-, +0.02/-0.01), signs of temperatures, angles, lengths, pressures, percentages,
voltages and currents ("−0°30′ ± 30′" is not "+0°30′ ± 30′"), one unit written once for several
values ("15 then 30 Nm", "intake 0.25, exhaust 0.35 mm"), repeated stages ("2 x 90°", "90° twice").

Units and conversions come from pint. The notations of workshop manuals pint lacks or reads
otherwise (kgm, mkg, kpm, kgf·m, daN·m, kg/cm² meaning kgf/cm², kp/cm², ltr, ℓ, cc, cm³, ℃, º, a
bare C/F after a temperature, ft/lbs, ft.lbs., PS/CV/ch, psig, thou/mil, mfd, VDC, US oz, mbar,
rpm as r.p.m., U/min, 1/min, tr/min, min⁻¹ and "/min") map to pint units in one table, UNIT_FORMS;
the few units pint lacks are defined from pint's own in PINT_DEFINITIONS; every other unit symbol
is asked of pint's parser (_unit_name: an English word pint happens to know, "at", "point", "rod",
a lone letter other than V A W N J g s h l t, is no unit). No conversion constant is written here.
Bare pints, quarts and gallons may be US or imperial: either reading may match. Also read: cubed
lengths (mm³, m³, km^3, "km cubed", "cubic kilometres", cu ft), kelvin, minutes and seconds of
arc, picometres and attometres, US kitchen measures (tbsp, tsp, "a cup of ..."), and thousands
written "k" before a unit ("0.5k miles", "100K km").

Symbols that mean two things are read by their context (_resolve_symbols):
- A prime (′ or ') after a number is minutes of arc after a degree value ("7°30′", "7°30′ ±
  30′") or before a bracketed double prime 60 times its value ("2½′ (150″)"); otherwise it is
  feet, which this checker does not read ("a 6' hose").
- A double prime (″, " or '') is inches ("16″", "9\" and 10\"") unless it follows degrees or
  minutes of arc ("12°30′15″") or is their 60-times bracketed equivalent: then seconds of arc.
  Degrees, minutes and seconds written together are one angle, in the unit printed last
  (7°30′ is 450′: "7.5°" matches it by rounding). A '"' after a number is a closing quotation
  mark when an odd number of the quotation marks before it are not units ('"English 101"').
- A bare K is kelvin beside another temperature ("300 °C (573.15K)"), after a word such as
  "temperature" in the 60 characters before it, or in an answer when the reference states a
  temperature ("boils at 398 K"); otherwise not ("2K clear coat", "a 10K resistor").
- pm and am are picometres and attometres unless the number reads as a clock time ("2 pm",
  "2.30 pm", "11:45 am"); "nm" is always a torque (write "nanometres").
- A degree sign followed by "on the Celsius/Fahrenheit scale" is a temperature ("−273.15° on
  the Celsius scale"); a bare degree sign is an angle, as a manual means it.
- "m3" is cubic metres only in lower case: "4 M3 screws" are a thread size. "cups" is a measure
  only as "cups of ..." ("replace the 2 cups" counts parts).

Decimal comma or thousands separator. A point is always a decimal point, and digits grouped
by a space ("1 200 kPa") are thousands. A comma followed by exactly three digits ("22,990",
"1,200") is read by this rule, in this order:
1. the text's own notation: a decimal comma elsewhere in it ("0,25", "1,5", any "0,...")
   makes it decimal; a decimal point elsewhere ("0.25") makes it a thousands separator;
2. for an answer that does not say, the reference's notation: a reference that writes
   "0,025 mm" makes an answer's "22,990 mm" 22.990 mm;
3. otherwise it is a thousands separator: "1,200 kPa" is 1200 kPa, and an answer's "22,990
   mm" against a reference's "22.990 mm" is 22990 mm and fails. A reference that writes only
   "22,990 mm" means 22990 mm here; write its other values with decimal commas (or 22.990).

Agreement. Two values in the same unit must be equal. In different units, the reference
converted into the answer's unit must round to the answer's printed value (half a step of
its last digit): 110 Nm = 81.1 ft-lb matches "81 ft-lb", not "80 ft-lb"; 21 Nm = 15.49
ft-lb matches "15 ft-lb", not "16 ft-lb". An answer more precise than a coarse reference may also be the
reference rounded ("59 Nm" for "6 kpm" = 58.8 Nm), within 2 %. A whole number ending in three
or more zeros is a round figure ("60,000 km" = "37,000 miles"). Fractions and turn words are
exact (1/4 turn = 90°). A range matches only a range whose two ends agree; a single value
inside an expected range fails, and so does a nominal value without the reference's tolerance
("1.5 kΩ ± 10 %" is 1.35–1.65 kΩ). An answer in another unit is never more than COARSE_REL (5 %)
off, whatever its rounding ("0.01 in" is not 0.15 mm, "1 bar" not 19 psi; "2 bar" is 29 psi).
Temperature differences (superheat, subcooling, Überhitzung, "temperature rise") convert by scale,
not offset; an answer's "degrees" answer a reference that states only temperatures.

Qualifiers (min, max, limit; German mind., max., höchstens; French mini, maxi; Japanese 以上, 以下,
使用限度) and conditions are part of a spec. A quantity's name is no qualifier: "Max. torque: 230
Nm at 4750 rpm", "Couple maxi", "Vitesse maxi". "max 0.10 mm" and "at least
0.10 mm" differ; a qualifier the reference states must be stated; a negated one flips ("must not
fall below" is a minimum, "no greater than" a maximum); a max or min that is part of a name need
not be said but must not be contradicted ("Minimum torque" is not "Maximum torque"). "limit" (wear
or service limit) agrees with the min or max its name implies (a maximum for runout, play,
clearance, a bore; a minimum for a thickness, a disc, a pad, a stem: _limit_direction), or either
when it does not say; a word after the value ("使用限度 36.5 mm以上") says which. Conditions (at idle, cold, hot / at operating
temperature, at 3000 rpm, at 80 °C) must agree when the reference states one: with one
condition for the whole reference it may be stated anywhere in the answer; with different
conditions for different values each value must carry its own. A condition the answer adds
where the reference states none is not judged.

Conditions in words (cold/kalt/froid/冷間, hot/warm/chaud, at idle/au ralenti/im Leerlauf, with/
without/mit/ohne/avec/sans + a noun) must agree; "with filter" unsaid is no contradiction, "without
filter" is. A value of any dimension after "at", "@", "bei" or "à" is the condition of a value of
another dimension ("14.2 V at 5,000 rpm", "185 cc/min at 3.0 bar", "45 kg at 40 mm", "7.5 kW/8,000
min⁻¹").

Names. The words around a value in its clause name it (_names): when the reference names values
of one dimension apart ("on at 92 °C, off at 87 °C", "IN 0.15 mm, EX 0.25 mm", "starts to open 82
°C, fully open 95 °C", "1.0 bar at low idle, 3.5 bar at rated speed", "3.727:1 (manual)"), an
answer's value that carries only another value's distinctive words is that other value: a swap
fails. A lone value's name has opposites (toe-in/toe-out, BTDC/ATDC, on/off, per leg/total). The
same names in German, French and Japanese read as one (vorn/avant/前 = front; BVM = manual;
enclenchement = on). Values the reference names apart that the answer names with none of its
words pair in order.

Labels. When the reference labels its values (M8/M10, intake/exhaust, stage 1/2/3,
front/rear, inner/outer, new/used, left/right, upper/lower, psig/psia, AC/DC), values pair by label: a swap
fails, a reordering passes. Unlabelled values of a tightening sequence (torque and angle
stages) pair in order: a missing, added or reordered stage fails.

Equivalents. "45 Nm (33 ft-lb)", "45 Nm / 33 ft-lb", Toyota's "127 N·m {1,300 kgf·cm, 94 ft·lbf}": each equivalent an answer states must
agree with its own main value at the equivalent's printed precision ("45 Nm (40 ft-lb)"
fails), and the main value must match the reference whatever its equivalent says. An
equivalent the reference itself prints may be matched in its place, even when it is not the
exact conversion ("6,000 km (4,000 mi)" answered "every 4,000 miles"); the same pair restated
passes. An answer's own equivalent is its main value as printed, converted and rounded to the
equivalent's digits ("45 Nm (34 ft-lb)" and "90 °C (196 °F)" fail).

Hedges. "30 or 35 Nm" states no single value: it fails.

Spec hallucinations. Every quantity the answer states as a specification and the reference
does not support fails the answer: a wrong or added torque, angle stage, capacity or
temperature, a fourth 90° stage ("40 Nm, then 90°" answered "40 Nm, then 90° twice"). A
restatement of a matched value is not one ("The torque is 40 Nm, so use 40 Nm") when the
reference gives one value of that kind and no sequence word (then, again, further, +, twice)
joins the two ("40 Nm, then 40 Nm again" is a second stage). Incidental numbers are not specifications: numbers without a unit ("bolt 4", "step 3",
a year, a part number), sizes of tools and parts ("17 mm socket", "the 10 mm bolts", "M10 x
1.25 mm": lengths only, "130 Nm drive shaft nut" is a torque; such a size still matches an
expected value it states: "a 16-meter hose"), conditions ("at 3000 rpm" after a pressure), and
distances where the reference states none ("recheck after 1000 km"). A number without a unit just
after a value of similar size in its sentence is another such value ("40 Nm, or 45 if reused",
"0.20 mm (0.25 on high-mileage engines)", "then 90°, then a further 90"); "28/32 psi" is two
values, not a fraction; re-torquing ("retorque to 40 Nm", "once more") is a further stage.

Page text. When the row carries the page's text (match(..., page_text=)), a value the answer
adds that the page states, under the same name where both name it, is not a hallucination (the
page is read up to MAX_TEXT_CHARS, and compared up to PAGE_COMPARISONS times).

Not applicable. A reference with no quantity the checker can read gives applicable=False and
the reason; so does a reference with a number followed by a unit symbol nothing here reads
("15 Ж", "46 cSt", "58 HRC", "65 KIAS") or a decimal with no unit ("Lambda 1.00 ± 0.03"): never
a verdict on the readable rest. Such a sample is graded by keywords or the judge,
never by this check, and the report lists it with the reason.

Bounds. Each text is read up to MAX_TEXT_CHARS, MAX_NUMBERS numbers and MAX_VALUES values; an
answer over any fails with the reason, a reference over any is not applicable. At most
MAX_NEW_UNITS unit symbols new to pint are parsed per text (pint's answers are cached). Each pattern is scanned
once per text, and each number looks at a bounded window around it, so the time is linear in
the text and capped (tests/test_specs.py: hostile texts at the cap under 50 ms).

passed = applicable and every expected value matched with its qualifier and conditions, the
sequence in order, no hallucinated value, no inconsistent equivalent, no hedge.
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

MAX_TEXT_CHARS = 8_000  # characters; a specification answer is a few sentences (512 tokens is ~2,500 characters)
MAX_NUMBERS = 200  # numbers in one text; a specification answer states a handful
MAX_VALUES = 40  # values with units in one text: beyond, a reference is a table (not applicable), an answer fails
MAX_NEW_UNITS = 12  # units pint is asked to parse for the first time per text (each ~1 ms; later reads are cached)
PAGE_COMPARISONS = 4_000  # answer value x page value comparisons; beyond, an added value is not excused by the page

MORE_PRECISE_REL = 0.02  # an answer more precise than a coarse reference ("59 Nm" for "6 kpm") may differ by this much
COARSE_REL = 0.05  # relative: an answer in another unit may be off by its rounding, but never by more than this

CANONICAL_UNIT = {"distance": "kilometer", "torque": "newton * meter", "angle": "degree", "length": "millimeter",
                  "pressure": "bar", "volume": "liter", "temperature": "degree_Celsius",
                  "speed": "revolutions_per_minute", "percent": "percent", "ratio": "ratio_to_one"}
UNIT_SYMBOL = {"distance": "km", "torque": "N·m", "angle": "°", "length": "mm", "pressure": "bar", "volume": "L",
               "temperature": "°C", "speed": "rpm", "percent": "%", "ratio": ":1"}

# Units pint lacks or reads otherwise, in the notation of older and non-English manuals.
PINT_DEFINITIONS = (
    "kilogram_force_meter = kilogram_force * meter = kgm = mkg = kpm",
    "kilogram_force_centimeter = kilogram_force * centimeter = kgcm",
    "kilogram_force_per_square_centimeter = kilogram_force / centimeter ** 2 = kgcm2",
    "ratio_to_one = [] = _ratio",  # "10.5:1": a compression or gear ratio, compared with ratios only
)

_SP = r"[ \t]?"
_B = r"(?![A-Za-z0-9µμΩ])"  # a unit must not run on into a longer word
_NOT_INCH = (r"(?!\s+\d)(?!\s+(?:my|his|her|our|your|their|its?|there|here|which|what|this|these|those|front|rear|"
             r"case|stock|general|service|good|turn|line|use|"
             r"the|a|an|each|every|one|two|three|four|five|six|several|stages?|steps?|sequence|"
             r"order|total|turns?|increments?|this|that|place|addition|all|both|diameter|length|use)\b)")


def _cubed(symbol: str, words: str) -> str:
    """A cubed length: "km3" (NFKC makes "km³" that), "km^3", "km cubed", "cubic kilometres", "cu km"."""
    return (rf"(?:{symbol}(?:3|\^3|\*\*3)|{symbol}{_SP}(?i:cubed)|(?i:cubic|cu\.?){_SP}(?:{symbol}|(?i:{words}))){_B}")


# Symbols that mean two things; _resolve_symbols reads them by their context (see the module docstring).
_PRIME = (r"(?<=\d)['′](?![′'A-Za-z])", "arcminute", "angle")  # 2½′: arc-minutes next to a degree or 60× seconds
_DOUBLE_PRIME = (r"(?<=\d)(?:\"|′′|'')", "inch", "length")  # 9" is inches; arc-seconds in 12°30′15″ or 2½′ (150″)
_KELVIN_SYMBOL = (rf"K{_B}(?![-/.]\w)", "kelvin", "temperature")  # 573.15K beside a temperature; "2K paint" is not
_PICO_SYMBOL = (rf"pm{_B}", "picometer", "length")  # "2.1 pm" a length, "2 pm" or "2.30 pm" a time of day
_ATTO_SYMBOL = (rf"am{_B}", "attometer", "length")

# (surface pattern, pint unit(s), family); first match wins, so longer forms come first.
# A tuple of pint units means the notation is ambiguous (US or imperial pints): any may match.
UNIT_FORMS: list[tuple[str, str | tuple[str, ...], str]] = [
    (rf"(?i:in\.?{_SP}hg){_B}", "inch_Hg", "pressure"),
    (rf"(?i:mm{_SP}hg){_B}", "millimeter_Hg", "pressure"),
    (rf"(?i:kgf?|kp){_SP}/{_SP}(?i:cm){_SP}(?:2|\^2|\*\*2|²){_B}|(?i:kgf?/sq\.?{_SP}cm){_B}", "kgcm2", "pressure"),
    # "-273.15° on the Celsius scale" is a temperature.
    (rf"(?i:°|deg(?:ree)?s?\.?)(?i:{_SP}on\s+the)?{_SP}(?:C|(?i:celsius|centigrade))(?i:\s+scale)?{_B}", "degree_Celsius",
     "temperature"),
    (rf"(?i:°|deg(?:ree)?s?\.?)(?i:{_SP}on\s+the)?{_SP}(?:F|(?i:fahrenheit))(?i:\s+scale)?{_B}", "degree_Fahrenheit",
     "temperature"),
    (rf"(?:(?i:kelvins?|°?{_SP}deg(?:ree)?s?{_SP}kelvin)|°{_SP}K(?![-/.]\w)){_B}", "kelvin", "temperature"),
    (rf"(?i:da{_SP}n{_SP}[·⋅•∙・･.*-]?{_SP}m){_B}", "decanewton * meter", "torque"),
    (rf"(?i:n{_SP}[·⋅•∙・･.*-]?{_SP}m|newton[\s-]?met(?:er|re)s?){_B}", "newton * meter", "torque"),
    (rf"(?i:kgf?{_SP}[·⋅•∙・･.*-]?{_SP}m|m{_SP}[·⋅•∙・･.*-]?{_SP}kgf?|kp{_SP}[·⋅•∙・･.*-]?{_SP}m|m{_SP}[·⋅•∙・･.*-]?{_SP}kp){_B}",
     "kgm", "torque"),
    (rf"(?i:kgf?{_SP}[·⋅•∙・･.*-]?{_SP}cm|cm{_SP}[·⋅•∙・･.*-]?{_SP}kgf?){_B}", "kgcm", "torque"),
    (rf"(?i:(?:in|inch)\.?{_SP}[-·⋅/\s]?{_SP}(?:lbf?s?|pounds?)\.?|(?:lbf?s?|pounds?)\.?{_SP}[-·⋅\s]?{_SP}(?:inch(?:es)?|in)\.?){_B}",
     "inch * force_pound", "torque"),
    (rf"(?i:(?:ft|foot|feet)\.?{_SP}[-·⋅/\s]?{_SP}(?:lbf?s?|pounds?)\.?|(?:lbf?s?|pounds?)\.?{_SP}[-·⋅\s]?{_SP}(?:ft|foot|feet)\.?)(?![A-Za-z0-9])",
     "foot * force_pound", "torque"),
    (rf"(?i:turns?|revs?|revolutions?){_B}(?!{_SP}(?i:per|/))", "turn", "angle"),
    # Engine speed as manuals print it: rpm, r.p.m., U/min and 1/min (German), tr/min (French), min⁻¹, "800/min".
    (rf"(?i:rpm|r\.p\.m\.?|r/min|rev/min|tr/min|t/min|u/min|giri/min|1/min|min[-−]1|/{_SP}min(?!\w)|revs?{_SP}(?:per|/){_SP}min(?:ute)?)(?!\w)",
     "revolutions_per_minute", "speed"),
    (rf"[ \t]?(?::|/|(?i:to)\b)[ \t]?1(?![.,]?\d)(?![ \t]?[A-Za-z°%])", "ratio_to_one", "ratio"),  # "10.5:1", "9,5/1", "18 to 1"
    (rf"V{_SP}?(?:DC|AC|d\.c\.|a\.c\.){_B}", "volt", "voltage"),  # "28.0 VDC", "12 V DC"
    (rf"(?i:vol\.?[-\s]?%|%{_SP}vol\.?)", "percent", "percent"),  # CO "1.0 ± 0.5 Vol.-%"
    (rf"A{_SP}(?:DC|AC){_B}", "ampere", "current"),
    (rf"(?:mfd|MFD|mf|MF|Mfd){_B}", "microfarad", "capacitance"),  # the old spelling of µF (not mF)
    (rf"(?i:meg(?:a)?ohms?|megohms?|meg{_SP}ohms?){_B}", "megaohm", "resistance"),
    (rf"(?i:(?:us|u\.s\.){_SP}(?:fl\.?{_SP})?oz\.?|fl\.?{_SP}oz\.?|fluid{_SP}ounces?){_B}", "fluid_ounce", "volume"),
    (rf"(?i:(?:imp\.?|imperial|uk){_SP}(?:fl\.?{_SP})?oz\.?){_B}", "imperial_fluid_ounce", "volume"),
    (rf"(?i:inch(?:es)?\s+of\s+mercury|in\.?{_SP}of{_SP}hg){_B}", "inch_Hg", "pressure"),
    (rf"(?i:(?:in\.?|inch(?:es)?){_SP}(?:of{_SP})?(?:h2o|water(?:\s+column)?|w\.?c\.?)){_B}", "inch_H2O", "pressure"),
    (rf"(?i:mm{_SP}(?:h2o|ws|wc|water(?:\s+column)?)|mmws){_B}", "millimeter_H2O", "pressure"),
    (rf"(?i:(?:[µμu]m|microns?){_SP}(?:of{_SP})?(?:hg|mercury)){_B}", "micrometer_Hg", "pressure"),  # HVAC vacuum
    (rf"(?i:(?:us{_SP})?(?:gph|gal(?:lons?)?{_SP}(?:/|per){_SP}h(?:(?:ou)?rs?)?)){_B}", "gallon / hour", "flow"),
    # Service intervals: "every 2,000 operating hours", "100 flight hours"
    (rf"(?i:(?:operating|flight|flying|engine|running|service|working)\s+h(?:ou)?rs?){_B}", "hour", "time"),
    (rf"(?i:thousandths?(?:\s+of\s+an?\s+inch)?){_B}", "thou", "length"),
    (rf"(?i:(?:us{_SP})?gal(?:lons?)?{_SP}(?:/|per){_SP}min(?:ute)?|gpm){_B}", "gallon / minute", "flow"),
    (rf"(?:PS|CV|cv|ch){_B}", "metric_horsepower", "power"),  # German PS, French ch/CV (pint reads PS as petasiemens)
    (rf"(?i:bhp|whp){_B}", "horsepower", "power"),
    (rf"(?i:kp){_B}", "kilogram_force", "force"),  # kilopond
    (rf"(?i:mils?|thou){_B}", "thou", "length"),  # thousandths of an inch
    (rf"(?:mbar|mBar|mb){_B}", "millibar", "pressure"),
    (rf"(?:°|(?i:deg(?:ree)?s?){_B}|(?i:deg)\.)", "degree", "angle"),
    # A bare C or F right after the number is a temperature ("80 C", "176F").
    (rf"C{_B}(?![-/.]\w)", "degree_Celsius", "temperature"),
    (rf"F{_B}(?![-/.]\w)", "degree_Fahrenheit", "temperature"),
    _KELVIN_SYMBOL,
    (_cubed("mm", r"millimet(?:er|re)s?"), "millimeter ** 3", "volume"),
    (rf"(?i:mm|millimet(?:er|re)s?){_B}", "millimeter", "length"),
    (rf"(?i:nanomet(?:er|re)s?){_B}", "nanometer", "length"),  # spelled out only: "nm" is a torque in a manual
    (rf"(?i:picomet(?:er|re)s?){_B}", "picometer", "length"),
    (rf"(?i:attomet(?:er|re)s?){_B}", "attometer", "length"),
    _PICO_SYMBOL,
    _ATTO_SYMBOL,
    (rf"(?i:cl|centilit(?:er|re)s?){_B}", "centiliter", "volume"),

    (rf"(?i:cm{_SP}(?:3|\^3|³)|cu\.?{_SP}cm|cc|ml|millilit(?:er|re)s?){_B}", "milliliter", "volume"),
    (_cubed("cm", r"centimet(?:er|re)s?"), "milliliter", "volume"),
    (rf"(?i:cu\.?{_SP}in(?:ch(?:es)?)?\.?|in{_SP}(?:3|\^3|³)|cubic{_SP}inch(?:es)?){_B}", "cubic_inch", "volume"),
    (_cubed("ft", r"f(?:oo|ee)t"), "cubic_foot", "volume"),
    (_cubed("km", r"kilomet(?:er|re)s?"), "kilometer ** 3", "volume"),
    (_cubed("m", r"met(?:er|re)s?"), "meter ** 3", "volume"),
    (rf"(?i:cm|centimet(?:er|re)s?){_B}(?![23²³])", "centimeter", "length"),
    (rf"(?:[µμ]m|um|(?i:microns?|micromet(?:er|re)s?)){_B}", "micrometer", "length"),
    _DOUBLE_PRIME,
    _PRIME,
    (rf"(?i:inch(?:es)?){_B}|(?i:in)\.?{_B}{_NOT_INCH}", "inch", "length"),
    # Distances (service intervals, cable lengths): judged only where the reference states one.
    (rf"(?i:km|kilomet(?:er|re)s?){_B}", "kilometer", "distance"),
    (rf"(?i:miles?|mi){_B}", "mile", "distance"),
    (rf"(?i:met(?:er|re)s?){_B}|m{_B}(?![-/·.]?\s?(?:kg|kp))", "meter", "distance"),
    (rf"(?i:bars?){_B}", "bar", "pressure"),
    (rf"(?i:psi[gad]?|lbf?s?/(?:sq\.?\s?in|in2|in²)){_B}", "psi", "pressure"),  # psig: gauge pressure
    (rf"(?i:kpa){_B}", "kilopascal", "pressure"),
    (rf"(?:MPa|MPA|Mpa|mpa){_B}", "megapascal", "pressure"),  # not mPa
    (rf"(?i:atm){_B}", "atmosphere", "pressure"),
    (rf"(?i:lit(?:er|re)s?|ltrs?\.?|l){_B}", "liter", "volume"),
    (rf"(?i:(?:imp\.?|imperial|uk){_SP}(?:qts?|quarts?)){_B}", "imperial_quart", "volume"),
    (rf"(?i:(?:imp\.?|imperial|uk){_SP}(?:pts?|pints?)){_B}", "imperial_pint", "volume"),
    (rf"(?i:(?:imp\.?|imperial|uk){_SP}(?:gals?|gallons?)){_B}", "imperial_gallon", "volume"),
    (rf"(?i:(?:us|u\.s\.){_SP}(?:gals?|gallons?)){_B}", "gallon", "volume"),
    (rf"(?i:(?:us|u\.s\.){_SP}(?:qts?|quarts?)){_B}", "quart", "volume"),
    (rf"(?i:(?:us|u\.s\.){_SP}(?:pts?|pints?)){_B}", "pint", "volume"),
    (rf"(?i:gals?|gallons?){_B}", ("gallon", "imperial_gallon"), "volume"),
    (rf"(?i:qts?|quarts?){_B}", ("quart", "imperial_quart"), "volume"),
    (rf"(?i:pts?|pints?){_B}", ("pint", "imperial_pint"), "volume"),
    # Kitchen measures (US): "a cup" is a measure only as "a cup of ..."; "2 cups" may be parts.
    (rf"(?i:cups?){_B}(?=\s+of\b)", "cup", "volume"),
    (rf"(?i:tbsps?|tablespoons?){_B}", "tablespoon", "volume"),
    (rf"(?i:tsps?|teaspoons?){_B}", "teaspoon", "volume"),
    # Rare in a manual, so tried last.
    (rf"(?i:arc[\s-]?min(?:ute)?s?|minutes?\s+of\s+(?:an\s+)?arc){_B}", "arcminute", "angle"),
    (rf"(?i:arc[\s-]?sec(?:ond)?s?|seconds?\s+of\s+(?:an\s+)?arc){_B}", "arcsecond", "angle"),
]
# A unit follows the number after at most two spaces, or a hyphen before a word ("16-meter", "a 10-mm socket");
# a unit followed by "/" and a letter is part of a rate ("10 l/km"), not one of these.
_UNIT_RE = re.compile("(?:[ \t]{0,2}|-(?=[A-Za-zµ°]))(?:" + "|".join(f"(?P<u{i}>{p})" for i, (p, _, _) in enumerate(UNIT_FORMS))
                      + r")(?!/[A-Za-z]|/[ \t]?\d{1,6}[ \t]?[A-Za-z]|\^|\s?(?:cubed|squared|per)\b)")

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD_VALUE = {w: i for i, w in enumerate(_ONES)} | {w: 10 * i for i, w in enumerate(_TENS) if w} | {"a": 1}
_BELOW_100 = rf"(?:(?:{'|'.join(_TENS[2:])})(?:[\s-](?:{'|'.join(_ONES[1:10])}))?|{'|'.join(reversed(_ONES))})"
_WORDS = rf"(?:(?:a|{'|'.join(_ONES[1:10])})\s+hundred(?:\s+(?:and\s+)?{_BELOW_100})?|{_BELOW_100})"

# Numbers: a mixed number, a fraction, digits grouped in thousands, a plain decimal, words.
_NUM_RE = re.compile(
    r"(?<![A-Za-z0-9_,^])(?<!\d\.)(?=[\d.])(?:"
    r"(?P<sci>\d{1,12}(?:\.(?P<scid>\d{1,12}))?)(?:[eE](?P<exp>[-+−]?\d{1,3})|[ \t]?[x×][ \t]?10(?:\^(?P<exp2>[-−]?\d{1,3})|(?P<exp3>[-−]\d{1,3})))(?![\d.])"
    r"|(?P<mw>\d{1,3})[ -](?P<mn>\d{1,2})/(?P<md>\d{1,2})(?![\d/])"
    r"|(?P<fn>\d{1,3})/(?P<fd>\d{1,3})(?![\d/])"
    r"|(?P<g>\d{1,3}(?:(?P<gs>[, ])\d{3})(?:(?P=gs)\d{3})*(?:\.\d+)?)(?![\d,]\d)"
    r"|(?P<p>\d{1,12}(?:[.,]\d{1,12})?|(?<!\.)\.\d{1,12}(?![.,]\d))"
    r")(?!\d)"
)
# Spelled-out numbers, read in the lower-cased text; the lookahead lets the regex engine skip ahead fast.
_WORD_NUM_RE = re.compile(
    rf"(?<![\w,/])(?=[aefnostz])\b(?:(?P<onehalf>one[\s-]half)|(?P<w>{_WORDS})(?P<half>\s+and\s+a\s+half)?"

    r"|(?P<one>an?)(?=\s+(?:gallon|quart|pint|lit(?:er|re)|inch|met(?:er|re)|mile|kilomet(?:er|re)|millimet(?:er|re)|"
    r"centimet(?:er|re))s?\b))\b")
_TURN_WORDS = [
    (r"(?:an?\s+|one\s+)?eighth(?:\s+of\s+a)?[\s-]+turn", 0.125),
    (r"(?:a\s+|one\s+)?quarter(?:\s+of\s+a)?[\s-]+turn", 0.25),
    (r"three[\s-]+quarters?(?:\s+of\s+a)?[\s-]+turn", 0.75),
    (r"one\s+and\s+a\s+half\s+turns", 1.5),
    (r"half\s+a\s+turn|(?:a\s+|one\s+)?half(?:\s+of\s+a)?[\s-]+turn", 0.5),
    (r"(?:a|one)\s+(?:full|complete|whole)\s+turn|(?:a\s+)?full\s+turn", 1.0),
]
_TURN_RE = re.compile("(?i:" + "|".join(f"(?P<t{i}>\\b{p}s?\\b)" for i, (p, _) in enumerate(_TURN_WORDS)) + ")")

_IDENTIFIER_WORD = re.compile(
    r"(?=[bnscpifhgmytvrkwd#])(?i:\b(?:bolts?|nuts?|screws?|studs?|steps?|stages?|pass(?:es)?|phases?|no|nos|number|nr|cylinders?|cyl|"
    r"items?|fig(?:ure)?s?|page|pp?|parts?|pos(?:ition)?|holes?|sequence|group|model|year|type|version|"
    r"section|chapter|table|ref|key|reference|terminals?|pins?|connectors?|fuses?|relays?|circuits?|wires?|"
    r"gears?|ports?|channels?|sensors?|klemme|borne|dtc|codes?)\.?\s*#?\s*|#\s*)")
_INCIDENTAL_AFTER = re.compile(
    r"(?i:[\s-]{0,2}(?:spark[\s-]plug\s+|feeler\s+|deep\s+|long\s+|hex\s+|12[\s-]point\s+|6[\s-]point\s+|impact\s+|open[\s-]end(?:ed)?\s+|"
    r"box[\s-]end\s+|ring\s+|combination\s+|allen\s+|socket[\s-]head\s+)?"
    r"(?:sockets?|wrench(?:es)?|spanners?|hex|allen|keys?|bolts?|nuts?|screws?|studs?|bits?|drills?|taps?|"
    r"dies|punch(?:es)?|pins?|washers?|hoses?|pipes?|lines?|banjo|fittings?|spacers?|heads?|ratchets?|"
    r"extensions?|drive|thread|gauges?|blades?|feelers?|wheels?|tyres?|tires?|diameter\s+(?:bolt|pipe|hose)s?)\b)")
_COUNT_AFTER = re.compile(r"(?i:\s*(?:bolts?|nuts?|screws?|studs?|times|places|stages|steps|passes|cylinders?|holes)\b)")
_INCIDENTAL_BEFORE = re.compile(r"(?=[mswd])(?:\bm\d{1,2}\s*[x×]\s*|\b(?:socket|wrench|spanner|drive|size)\s*(?:of\s*)?)")
_CLAUSE_BREAK = re.compile(r"[,;\n]")

# A range or tolerance stays on one line: "- 30 Nm\n- 60 Nm" is a list, not 30–60 Nm.
_RANGE_GAP = re.compile(r"-?[ \t]*(?:[-–—‒−~〜÷]|to|bis|à|\.{2,3}|…)[ \t]*[-−+]?")  # "−10 % to +10 %", "25 ÷ 30 Nm"  # "8- to 16-meter", "-18 °C to -34 °C"
_BETWEEN_BEFORE = re.compile(r"(?i:\bbetween|\bfrom|\bde|\bda|\bvon|\bentre|\btra|\bfra)\s*$")
_BETWEEN_AND = re.compile(r"(?i:\s*(?:and|und|et|y|e|a|à|bis)\s*)")  # "between 10 and 13", "de 0,20 a 0,25", "da 10 a 13"
_TOL_GAP = re.compile(r"[ \t]*(?:±|\+/-|\+/−|\+-|\+ / -)[ \t]*")
_LONE_TOLERANCE = re.compile(r"(?<![\d\w)°′″'\"%])[ \t]*±[ \t]*$")
_PLUS_GAP = re.compile(r"[ \t]*\+[ \t]*")
_SLASH_MINUS_GAP = re.compile(r"[ \t]*/?[ \t]*[-−][ \t]*")
_TIMES_GAP = re.compile(r"\s*[x×]\s*")
_LABEL_WORDS = (r"intake|inlet|exhaust|front|rear|inner|outer|new|used|left|right|upper|lower|top|bottom|"
                r"primary|secondary|first|second|third|final|(?:stage|step|pass)\s*\d{1,2}|M\d{1,2}")
_LIST_GAP = re.compile(
    rf"(?i:\s*(?:,|;|/|&)?\s*(?:(?:and|then|or|and\s+then|followed\s+by|finally)\s+)?"
    rf"(?:(?:for\s+|the\s+)?(?:{_LABEL_WORDS})(?:\s+(?:valves?|bolts?|stage|step))?\s*[:=]?\s*)?)")
_OR_GAP = re.compile(r"(?i:\s*,?\s*or\s*)")
_EQUIV_GAP = re.compile(r"\s*(?:/|=|≈|,?\s*(?i:or))\s*")  # "50 Nm / 37 ft-lb", "50 Nm, or 37 ft-lb"
_OPEN_GAP = re.compile(r"\.?[\s*_]*[(\[{]\s*(?:(?i:approx(?:imately)?\.?|about|ca\.?|~|≈)\s*)?")
_CLOSE = {"(": ")", "[": "]", "{": "}"}
# A unit symbol after a number that no notation here and nothing in pint reads: a symbol character, not a word.
# (Japanese and Chinese words glued to a number, "3箇所", are words, not units.)
_UNREAD_ASCII = re.compile(r"[ \t]?(?P<word>[A-Za-z][A-Za-z0-9()]{0,7})(?![A-Za-z0-9])")
# Short words that follow a number in prose and are not units (a longer lower-case word is never taken for one).
_SHORT_WORDS = frozenset(
    "a an and are as at be by do for from if in into is it its no nor not of off on or per so than that the then to "
    "up via was we with x each more less both new old one two six ten all any has had may can use see set top end way "
    "out own fit put get cut pc pcs qty ea nos und oder mit bei bis et ou le la les de du des y e o del con per al "
    "times also only just about over under again plus".split())


def _unit_like(word: str) -> bool:
    """Whether a token after a number looks like a unit symbol nothing here reads ("cSt", "HRC", "KIAS", "shp")."""
    if word.lower() in _SHORT_WORDS or word.lower() in _NOT_UNIT_WORDS:
        return False
    return (any(c.isupper() for c in word) and len(word) <= 6) or len(word) <= 3


_UNREAD_UNIT = re.compile(r"[ \t]?[^\x00-\x7f\s\u2010-\u2015\u2212±×…\u3000-\u9fff\uff00-\uffef]\S{0,8}")
_EQUIV_FILL = re.compile(r"\s*(?:[,;/]|(?i:or))?\s*")
_REPEAT_AFTER = re.compile(r"(?i:\s*,?\s*(?:(?P<twice>twice)|(?P<thrice>three\s+times)|two\s+times(?P<two>)|[x×]\s*(?P<n>[2-4])(?!\d)"
                           r"|(?P<n2>[2-4])\s+times\b))")

# A qualifier before a value: found once per text, then the nearest one in the value's clause applies.
# English, German (mind., max., höchstens, Verschleißgrenze) and French (mini, maxi, au moins, limite d'usure).
_QUALIFIER_BEFORE = re.compile(
    r"(?=[wsrlmaniuhvpjb<≤=>≥go使限])(?:(?P<limit>\b(?:wear|service|repair)\s+limit|\blimit|\bverschlei(?:ß|ss)grenze|"
    r"\blimite(?:\s+d'usure)?)\b|(?P<limit2>使用限度|限度)"
    r"|(?P<max>(?<!/)\b(?:max(?:imum|imal|i)?|höchstens|at\s+most|no\s+more\s+than|not\s+more\s+than|not\s+(?:to\s+)?exceed(?:ing)?|"
    r"(?<!fill\s)(?<!top\s)(?<!filled\s)up\s+to|(?<!not\s)(?<!no\s)less\s+than|lower\s+than|under|below|au\s+maximum|au\s+plus|pas\s+plus\s+de)\b\.?|<=?|≤|=<)"
    r"|(?P<min>(?<!/)\b(?:min(?:imum|imal|i)?|mind(?:estens)?|at\s+least|no\s+less\s+than|not\s+less\s+than|"
    r"(?<!not\s)(?<!no\s)more\s+than|over|above|greater\s+than|au\s+moins|pas\s+moins\s+de)\b\.?|>=?|≥|=>))")
# "Max. torque: 230 Nm at 4750 rpm", "Couple maxi", "max. Leistung": "max" names the quantity, it is no qualifier.
_NAMED_AFTER = re.compile(r"\s*(?:(?:engine|motor|road|top|vehicle)\s+)?(?:torque|power|output|speed|rpm|revs|horsepower|drehmoment|"
                          r"leistung|drehzahl|couple|puissance|régime)\b")
_NAMED_BEFORE = re.compile(r"(?:torque|power|output|drehmoment|leistung|drehzahl|couple|puissance|régime|vitesse)\s*$")
QUALIFIER_REACH = 40  # characters between a qualifier and its value, in one clause
_FLIP = {"min": "max", "max": "min"}
_NEGATED = re.compile(r"\b(?:not|never|no|nicht|nie|pas)\b(?:\s+[a-zäöüéè]+){0,2}\s*$")

_BRACKET_AFTER = re.compile(r"[ \t]*[(\[{][^()\[\]{}]{1,40}[)\]}]")
_QUALIFIER_AFTER = [
    ("max", re.compile(r"(?i:\s*\(?\s*(?:max(?:imum|i)?\b\.?|(?:[a-z]+\s+)?or\s+(?:less|under|below|lower|smaller)\b|at\s+most\b))")),
    ("min", re.compile(r"(?i:\s*\(?\s*(?:min(?:imum|i)?\b\.?|mind\.|(?:[a-z]+\s+)?or\s+(?:more|over|above|higher|greater|larger)\b|at\s+least\b))")),
    ("limit", re.compile(r"(?i:\s*\(?\s*(?:(?:wear|service)\s+)?limit\b)")),
    ("min", re.compile(r"\s*以上")), ("max", re.compile(r"\s*(?:以下|未満)")),  # Japanese: "12.5 V以上" is 12.5 V or more
]
_CONDITION_BEFORE = re.compile(r"(?=[a@wbmeoc(\[])(?:(?:\bat|@|\bwhen|\bwith|\babove|\bbelow|\bmeasured\s+at|\bengine\s+speed(?:\s+of)?|[(\[]|"
                               r"\boil\s+temperature(?:\s+of)?|\bcoolant\s+temperature(?:\s+of)?)\s*(?:approx\.?\s*|about\s*)?|@\s*)")
# Conditions in words, in English, German and French: idle, cold, hot; "with/without filter change", "mit/ohne
# Filter", "avec/sans filtre" (the object after the word is what must agree).
_CONDITION_WORDS = re.compile(
    r"(?=[a@i(chwonbkfmltrefgw冷温暖])(?i:(?:\bat|@|\bau|\bim|\bbei)\s*(?:low\s+)?(?P<idle>idle|ralenti|leerlauf)\b"
    r"|\b(?P<idling>idling)\b|\((?P<idle2>idle)\)"
    r"|\b(?P<high>high\s+(?:revs|rpm|speed|idle)|full\s+(?:load|throttle)|rated\s+speed|wide[\s-]open\s+throttle|vollast|pleine\s+charge)\b"
    r"|\b(?P<cold>cold|kalt(?:em|er)?|froid)\b|(?P<cold2>冷間時?)"
    r"|\b(?P<hot>hot|warm(?![\s-]up\b)|warmed(?:[\s-]up)?|(?:normal\s+)?operating\s+temp(?:erature)?|betriebswarm|"
    r"betriebstemperatur|hei(?:ß|ss)(?:em|er)?|chaud|température\s+de\s+fonctionnement)\b|(?P<hot2>温間時?|暖機時))")
# Rarer, so each is scanned only where a cheap test finds its words (the scan of every text is the check's cost).
_WITH_WORDS = re.compile(
    r"(?=[wmoasdiek])(?i:\b(?P<without>without|w/o|ohne|sans|excluding|excl\.|exkl\.)\s*(?:(?:a|an|the|new|oil|le|la|les|l'|den|die|das)\s*)?[a-zäöüßéèàç]{3,}"
    r"|\b(?P<with>with|mit|avec|including|incl\.|inkl\.)\s*(?:(?:a|an|the|new|oil|le|la|les|l'|den|die|das)\s*)?[a-zäöüßéèàç]{3,})")
_WITH_HINTS = ("with", "w/o", "mit ", "ohne", "avec", "sans", "incl", "inkl", "excl", "exkl")
# an automatic transmission's selector: "(in P or N position)", "in D", "in neutral"
_SELECTOR_WORDS = re.compile(
    r"(?=[ie])\b(?:in|im|en)\s+(?P<gear>(?:[pndr]|park|neutral|drive|reverse)(?:\s*(?:or|and|/|,)\s*(?:[pndr]|park|neutral|drive|reverse))*)\b")
_SELECTOR = {"park": "p", "neutral": "n", "drive": "d", "reverse": "r"}
_WORD_CONDITION = {"gear": "selector", "high": "speed", "idle": "speed", "idling": "speed", "idle2": "speed", "cold": "temperature", "hot": "temperature",
                   "cold2": "temperature", "hot2": "temperature"}
# "at", "bei", "à" before a value of another dimension make it a condition ("185 cc/min at 3.0 bar").
_AT_BEFORE = re.compile(r"(?:\bat|@|\bbei|\bà|\bmeasured\s+at)\s*(?:approx\.?\s*|about\s*|ca\.\s*)?")
_SENTENCE_END = re.compile(r"\n|;|[.!?](?=\s+[A-Z(]|\s*$)")
_SEGMENT_END = re.compile(r"(?=[\n;,.!?atwbudpe 、，；])(?:\n|;|,|、|，|；| / |(?<!min)(?<!max)(?<!mind)(?<!approx)(?<!ca)(?<!no)(?<!\d)[.!?](?=\s|$)"
                          r"|(?i:\band\b|\bthen\b|\bwhile\b|\bbut\b|\bwhereas\b|\bund\b|\bdann\b|\bet\b|\bpuis\b))")
_LABEL_RE = re.compile(
    r"(?=[mspfiertnoul1-5gbavd])(?i:\b(?P<size>M\d{1,2})(?:\s*[x×]\s*\d+(?:[.,]\d+)?)?\b"
    r"|\b(?:stage|step|pass)\s*#?\s*(?P<stage>\d{1,2})\b|\b(?P<stage_ord>\d)(?:st|nd|rd|th)\s+(?:stage|step|pass)\b"
    r"|\b(?P<stage_word>first|second|third|fourth|fifth)\s+(?:stage|step|pass)\b"
    r"|\b(?:stage|step|pass)\s+(?P<stage_after>one|two|three|four|five)\b"
    r"|\b(?P<intake>intake|inlet)\b|\b(?P<exhaust>exhaust)\b"
    r"|\b(?P<front>front)\b|\b(?P<rear>rear)\b|\b(?P<inner>inner)\b|\b(?P<outer>outer)\b"
    r"|\b(?P<new>new)\b|\b(?P<used>used|reused|old)\b|\b(?P<left>left)\b|\b(?P<right>right)\b"
    r"|\b(?P<upper>upper)\b(?<!or\supper)|\b(?P<lower>lower)\b(?<!or\slower)"
    # gauge or absolute pressure, direct or alternating current: "43 psig" is not "43 psia", "12 V DC" not "12 V AC"
    r"|\b(?P<gauge>psig|barg|bar\s?\(g\)|gauge\s+pressure|(?<=bar\s)gauge|(?<=psi\s)gauge|(?<=kpa\s)gauge)(?!\w)"
    r"|\b(?P<absolute>psia|bara|bar\s?\(a\)|absolute(?:\s+pressure)?)(?!\w)"
    r"|\b(?P<dc>dc|vdc|adc|d\.c\.)(?!\w)|\b(?P<ac>ac|vac|aac|a\.c\.)(?!\w))")
_VALVE_CAPITALS = re.compile(r"\b(?P<intake>IN)\b|\b(?P<exhaust>EX)\b")
_LABEL_KIND = {"intake": "valve", "exhaust": "valve", "front": "axle", "rear": "axle", "inner": "side",
               "outer": "side", "new": "wear", "used": "wear", "left": "hand", "right": "hand",
               "upper": "height", "lower": "height", "gauge": "pressure reference", "absolute": "pressure reference",
               "dc": "current type", "ac": "current type"}
_ORDINAL = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "one": 1, "two": 2, "three": 3,
            "four": 4, "five": 5}
# Words that make a repeated value a further stage rather than a restatement ("40 Nm, then 40 Nm again").
_SEQUENCE_WORDS = re.compile(r"(?i:\b(?:then|again|further|another|followed|additional|twice|stages?|steps?|plus|"
                             r"re-?torque[ds]?|re-?tighten(?:ed)?|once\s+more|second\s+time|nachziehen|resserrer)\b|\+)")
_CONTROL = re.compile(
r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2028\u2029\ufeff]")
_VULGAR = {"½": " 1/2", "¼": " 1/4", "¾": " 3/4", "⅛": " 1/8", "⅜": " 3/8", "⅝": " 5/8", "⅞": " 7/8",
           "⅓": " 1/3", "⅔": " 2/3", "º": "°", "˚": "°", "⁄": "/", "∕": "/",
           "…": "~", "〜": "~"}  # 22…25 Nm, 0.7〜0.8 mm: ranges (NFKC would make "…" three points)
_VULGAR_RE = re.compile("|".join(_VULGAR))
# A model's LaTeX ("$40\\,\\mathrm{N\\cdot m}$", "\\(90^\\circ\\)"): the text it typesets.
_LATEX_WRAPPER = re.compile(r"\\(?:mathrm|text|textrm|mathit|operatorname|unit|si)\s*\{([^{}]{0,40})\}")
_LATEX_SYMBOLS = {r"\cdot": "·", r"\times": "×", r"\pm": "±", r"\circ": "°", r"\degree": "°", r"\%": "%",
                  r"\,": " ", r"\;": " ", r"\:": " ", r"\ ": " ", r"\!": "", r"\(": " ", r"\)": " ", r"\[": " ",
                  r"\]": " ", r"\Omega": "Ω", r"\mu": "µ", r"\le": "≤", r"\ge": "≥", r"\leq": "≤", r"\geq": "≥",
                  "$": " ", "~": " "}
_LATEX_SYMBOL = re.compile("|".join(re.escape(k) for k in sorted(_LATEX_SYMBOLS, key=len, reverse=True)) + r"|\^\{?°\}?")


def _from_latex(text: str) -> str:
    for _ in range(2):  # one level of nesting ("\\text{\\mathrm{...}}")
        text = _LATEX_WRAPPER.sub(r"\1", text)
    text = _LATEX_SYMBOL.sub(lambda m: "°" if m.group().startswith("^") else _LATEX_SYMBOLS[m.group()], text)
    return text.replace("^{°}", "°").replace("^°", "°")


_APOSTROPHE_THOUSANDS = re.compile(r"(?<=\d)['’](?=\d{3}(?!\d))")
_DECIMAL_COMMA = re.compile(r"(?<![\d,])\d+,(?:\d{1,2}|\d{4,})(?![\d,])|(?<![\d,])0,\d+")
_DECIMAL_POINT = re.compile(r"\d\.\d|\d{1,3}(?:,\d{3}){2,}")


@dataclass(frozen=True)
class Condition:
    dimension: str  # a family ("speed": idle, rpm; "temperature": cold, hot, °C), or "with <noun>"
    word: str | None  # idle, cold, hot, with, without; None for a stated value
    quantity: Quantity | None = None
    raw: str = ""
    heading: bool = False  # stated in the heading before the value ("CO at idle: 0.5 %"): it names the value


@dataclass(frozen=True)
class Quantity:
    value: float  # canonical unit of the family (UNIT_SYMBOL); the low end of a range
    high: float | None  # high end of a range, None for a single value
    family: str
    raw: str
    stage: int | None = None
    equivalents: tuple[Quantity, ...] = ()  # restatements in other units
    labels: tuple[tuple[str, str], ...] = ()  # (kind, value): ("valve", "intake"), ("stage", "2")
    names: frozenset[str] = frozenset()  # the words that name the value in its clause ("on", "fully", "rated")
    qualifier: str | None = None  # "min", "max", "limit"
    conditions: tuple[Condition, ...] = ()
    unit: str = ""  # pint unit as printed; a tuple's first element when ambiguous
    units: tuple[str, ...] = ()  # every reading of the unit (US or imperial pints)
    readings: tuple[tuple[float, float | None, float], ...] = ()  # (low, high, precision) as printed, each reading
    precision: float = 0.0  # half a step of the last printed digit, in `unit`
    role: str = "spec"  # "spec", "condition" or "incidental"
    hedge: str | None = None  # raw text of the alternative value in "30 or 35 Nm"
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SpecMatch:
    passed: bool
    applicable: bool
    score: float
    details: list[str]
    missing: tuple[Quantity, ...]
    hallucinated: tuple[Quantity, ...]
    order_ok: bool


@lru_cache(maxsize=1)
def _registry():
    import pint  # imported on first use: the light CLI never pays for it unless it grades

    registry = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    for definition in PINT_DEFINITIONS:
        registry.define(definition)
    return registry


@lru_cache(maxsize=1024)
def _affine(unit: str, to_unit: str) -> tuple[float, float]:
    """(scale, offset) of the conversion, from pint: every unit here converts affinely (°C to °F has an offset).

    A mass and a force convert through standard gravity: a manual's "45 kg" spring load is 45 kgf.
    """
    registry = _registry()
    one = registry.Quantity(1.0, unit)
    if not one.is_compatible_with(to_unit):
        gravity = registry.Quantity(1.0, "standard_gravity")
        one = one * gravity if (one * gravity).is_compatible_with(to_unit) else one / gravity
        return one.to(to_unit).magnitude, 0.0
    zero = registry.Quantity(0.0, unit).to(to_unit).magnitude
    return one.to(to_unit).magnitude - zero, zero


# Families. A unit's family is its pint dimensionality, named; quantities compare only within a dimension.
_FAMILY_EXAMPLES = (
    ("meter", "length"), ("liter", "volume"), ("meter ** 2", "area"), ("kilogram", "mass"), ("newton", "force"),
    ("bar", "pressure"), ("newton * meter", "torque"), ("watt", "power"), ("second", "time"),
    ("kilometer / hour", "road speed"), ("hertz", "frequency"), ("ampere", "current"), ("volt", "voltage"),
    ("ohm", "resistance"), ("farad", "capacitance"), ("henry", "inductance"), ("liter / minute", "flow"),
    ("kilogram / hour", "mass flow"), ("ampere * hour", "charge"), ("newton / millimeter", "spring rate"),
    ("kelvin", "temperature"), ("meter / second ** 2", "acceleration"),
    ("kilogram / liter", "density"),
)
_NAMED_FAMILIES = frozenset(name for _, name in _FAMILY_EXAMPLES) | {"energy", "consumption", "percent", "angle", "ratio",
                                                                     "temperature difference"}
_DIMENSIONLESS_FAMILIES = {"percent": "percent", "permille": "percent", "ppm": "percent", "radian": "angle",
                           "degree": "angle", "arcminute": "angle", "arcsecond": "angle", "turn": "angle",
                           "revolution": "angle", "ratio_to_one": "ratio"}
_ENERGY_UNITS = re.compile(r"joule|watt_hour|calorie|btu|electron_volt|erg\b|therm")  # torque's dimension, not a torque
_SAME_DIMENSION = {"distance": "length"}  # a distance (km, miles) is a length: compared, but judged apart
SEQUENCE_FAMILIES = ("torque", "angle")  # a tightening sequence: order matters across both


@lru_cache(maxsize=1)
def _family_names() -> dict:
    registry = _registry()
    return {registry.parse_units(unit).dimensionality: name for unit, name in _FAMILY_EXAMPLES}


@lru_cache(maxsize=1024)
def _family_of(unit: str) -> str | None:
    """The family of a pint unit ("kiloohm" -> "resistance"); None for a count or a logarithmic unit."""
    registry = _registry()
    try:
        parsed = registry.parse_units(unit)
        registry.Quantity(1.0, parsed).to_base_units()  # a logarithmic unit (dB) does not convert: not read
    except Exception:  # noqa: BLE001 - pint raises several kinds for a unit it cannot use
        return None
    if not parsed.dimensionality:
        return next((family for name, family in _DIMENSIONLESS_FAMILIES.items() if name in str(parsed)), None)
    named = _family_names().get(parsed.dimensionality)
    if named == "torque" and _ENERGY_UNITS.search(str(parsed)):
        return "energy"
    if parsed.dimensionality == registry.parse_units("meter ** 2").dimensionality and "/" in str(parsed):
        return "consumption"  # "7 l/100 km": a volume per distance, an area to pint
    return named or str(parsed.dimensionality)


def _dimension(family: str) -> str:
    return _SAME_DIMENSION.get(family, family)


def _kind(family: str) -> str:
    """Families that compare share a kind: one dimension, or a mass and a force (a manual's kg is often kgf)."""
    dimension = _SAME_DIMENSION.get(family, family)
    return "force" if dimension == "mass" else dimension


def compatible(family_a: str, family_b: str) -> bool:
    """Whether values of these families compare."""
    return family_a == family_b or _kind(family_a) == _kind(family_b)


@lru_cache(maxsize=256)
def _canonical_unit(family: str, unit: str) -> str:
    """The unit a family's values are held in: CANONICAL_UNIT, or pint's base unit for the others."""
    if family in CANONICAL_UNIT:
        return CANONICAL_UNIT[family]
    registry = _registry()
    return str(registry.Quantity(1.0, unit).to_base_units().units) if family not in ("percent", "ratio", "angle") else unit


@lru_cache(maxsize=256)
def _symbol(family: str, unit: str) -> str:
    try:
        return f"{_registry().Unit(unit):~P}"
    except Exception:  # noqa: BLE001 - a unit with a factor ("(pound / inch) * standard_gravity") has no symbol
        return unit


# Any other unit pint knows, read after a number when no notation of UNIT_FORMS matches it: "15 Ω", "2.5 kΩ",
# "12 V", "30 A", "4.7 µF", "1,350 kg", "200 N", "110 kW", "5 s", "100 km/h", "35 %", "185 cc/min",
# "10 mL per minute". A piece is a unit symbol or name, with an optional power ("mm2").
_PIECE = r"[A-Za-zμΩ%‰][A-Za-zμΩ]{0,15}(?:\^?-?[1-4](?![.,]?\d))?(?![A-Za-z0-9])"
_GENERIC_UNIT_RE = re.compile(
    rf"(?:[ \t]{{0,2}}|-(?=[A-Za-zμ]))(?P<head>{_PIECE}(?:[·⋅*]{_PIECE})*)"
    rf"(?:(?P<slash>[ \t]*/[ \t]*)(?:(?P<dnum>\d{{1,6}})[ \t]?)?(?:(?P<den>{_PIECE})|\((?P<dengroup>{_PIECE}(?:[·⋅*]{_PIECE})+)\))"
    rf"|[ \t]+(?i:per|pro|par)[ \t]+(?:(?P<pnum>\d{{1,6}})[ \t]?)?(?P<perden>{_PIECE}))?")
# Words pint reads as units that, after a number in a manual, are words or counts ("4 at a time", "12 point
# socket", "4 pc", "2 rods"); and the lone letters that are units (an "A" after a number may be a panel).
_NOT_UNIT_WORDS = frozenset(
    "a an at are in is it on of or to the and as by be do if no so up we us per pro par x point points pc pcs "
    "ct rod rods chain chains link links hand hands pole poles perch barn bit bits byte bytes mark cycle cycles "
    "count counts dozen gross line lines pi tex den ly au pt mil mils ch cv ps st nd rd th cup cups".split())
_SINGLE_LETTER_UNITS = frozenset("VAWNJgshltmLΩ%‰")
_SYMBOL_NAMES = {"%": "percent", "‰": "permille"}
_PREFIXES = frozenset({"kilo", "mega", "giga", "tera", "milli", "micro", "centi", "deci", "deca", "nano", "hecto"})
_PREFIXABLE = frozenset({"meter", "gram", "second", "liter", "newton", "pascal", "bar", "volt", "ampere", "ohm", "farad",
                         "watt", "joule", "hertz", "henry", "coulomb", "watt_hour", "ampere_hour", "electron_volt",
                         "calorie", "tesla", "gram_force", "gray", "sievert", "becquerel"})
_POWER = re.compile(r"(.*?)(?:\^?(-?[1-4]))?")


@lru_cache(maxsize=4096)
def _unit_name(piece: str, denominator: bool = False) -> str | None:
    """The pint unit a piece names ("kΩ" -> "kiloohm", "KW" -> "kilowatt"), or None: not a unit, or a word."""
    base, power = _POWER.fullmatch(piece).groups()
    if denominator and base in ("in", "h", "s"):  # "lb/in", "km/h": unambiguous after a slash
        base = {"in": "inch", "h": "hour", "s": "second"}[base]
    elif denominator and len(base) == 1:  # "J/m^2", "m/s": any unit letter after a slash
        pass
    elif (base not in _SINGLE_LETTER_UNITS if len(base) == 1 else base.lower() in _NOT_UNIT_WORDS):
        return None
    base = _SYMBOL_NAMES.get(base, base)
    # An all-capitals symbol ("MM", "KPA", "KW") may be any case. A mixed-case one is read as printed, with its
    # letters after the first lowered ("MOhm" is "Mohm", a megohm; "kOhm" a kiloohm), and lowered altogether only to
    # a unit with no prefix ("Torr") or where its capital is no prefix of its own ("KOhm"): never "MOhm" as
    # milliohm, "mS" as ms. Each variant: (spelling, whether a prefix may be read in it).
    head, rest = base[:1], base[1:]
    if base.isupper():
        variants = ((base, True), (base.lower(), True), (head.lower() + rest, True))
    else:
        free = head.isupper() and head not in "MGTPE"
        variants = ((base, True), (head + rest.lower(), len(rest) > 1), (head.lower() + rest, free), (base.lower(), free))
    registry = _registry()
    for variant, prefixed in dict.fromkeys(variants):
        try:
            candidates = registry.parse_unit_name(variant)
        except Exception:  # noqa: BLE001 - pint's parser rejects some characters outright
            continue
        for prefix, name, _ in candidates:
            if not prefix or (prefixed and prefix in _PREFIXES and name in _PREFIXABLE):
                return f"{prefix}{name}" + (f" ** {power}" if power else "")
    return None


@lru_cache(maxsize=4096)
def _generic_unit(head: str, denominator: str | None) -> tuple[str, str] | None:
    """(pint unit, family) of a unit symbol UNIT_FORMS does not hold, or None."""
    names = [_unit_name(piece) for piece in re.split(r"[·⋅*]", head)]
    if not all(names):
        return None
    unit = " * ".join(names)
    if denominator:
        belows = [_unit_name(piece, True) for piece in re.split(r"[·⋅*]", denominator)]  # "kJ/(kg·K)"
        if not all(belows):
            return None
        below = belows[0] if len(belows) == 1 else "(" + " * ".join(belows) + ")"
        unit = f"({unit}) / {below}" if len(names) > 1 else f"{unit} / {below}"
    family = _family_of(unit)
    if family not in _family_names().values() and family not in _DIMENSIONLESS_FAMILIES.values():
        # "100 lb/in", "2.5 kg/mm": a spring rate in a mass unit means its force
        weighed = f"({unit}) * standard_gravity"
        if _family_of(weighed) in _family_names().values():
            return weighed, _family_of(weighed)
    return (unit, family) if family else None


# Every unit read so far: UNIT_FORMS's, then the others in the order first met. A number's unit_index points here.
_FORMS: list[tuple[tuple[str, ...], str]] = [((unit,) if isinstance(unit, str) else unit, family) for _, unit, family in UNIT_FORMS]
_FORM_INDEX: dict[str, int] = {}


def _form_index(unit: str, family: str) -> int:
    index = _FORM_INDEX.get(unit)
    if index is None:
        _FORMS.append(((unit,), family))
        index = _FORM_INDEX.setdefault(unit, len(_FORMS) - 1)
    return index


_SQUARE_RE = re.compile(rf"[ \t]{{0,2}}(?:(?i:sq\.?|square)[ \t]+(?P<before>{_PIECE})|(?P<after>{_PIECE})[ \t]+(?i:squared)\b)")


_PARSED: set[tuple[str, str | None]] = set()  # unit symbols pint has been asked about (its answers are cached)


def _parse_budget(head: str, below: str | None, budget: list[int]) -> bool:
    """Whether this unit may be asked of pint: always when asked before, else while the text's budget lasts."""
    key = (head, below)
    if key in _PARSED:
        return True
    if budget[0] <= 0:
        return False  # hostile text: a unit never seen is left unread (a reference is then not applicable)
    budget[0] -= 1
    if len(_PARSED) > 100_000:
        _PARSED.clear()
    _PARSED.add(key)
    return True


def _read_unit(text: str, pos: int, budget: list[int] | None = None) -> tuple[int, int, int] | None:
    """(unit index, end, per how many of the denominator) of a unit pint knows that starts at pos, or None.

    `budget`: how many units never seen before pint may still be asked to parse for this text (MAX_NEW_UNITS).
    """
    budget = budget if budget is not None else [MAX_NEW_UNITS]
    square = _SQUARE_RE.match(text, pos)  # "116,347 sq mi", "4 square kilometers", "4 km squared"
    if square and _parse_budget(square.group(), "square", budget):
        name = _unit_name(square.group("before") or square.group("after"))
        if name and _family_of(name) == "length":
            return _form_index(f"{name} ** 2", "area"), square.end(), 1
    m = _GENERIC_UNIT_RE.match(text, pos)
    if m is None:
        return None
    head = m.group("head")
    if m.start("head") == pos and len(head) == 1 and head.islower():
        return None  # "the 1990s", "5s": a lone lower-case letter is a unit only after a space
    below = m.group("den") or m.group("dengroup") or m.group("perden")
    count = int(m.group("dnum") or m.group("pnum") or 1)  # "0,5 l/1000 km", "850 cm³/30 s": the value is per one
    found, end = (_generic_unit(head, below), m.end()) if below and _parse_budget(head, below, budget) else (None, 0)
    if found is None:
        found, end, count = (_generic_unit(head, None) if _parse_budget(head, None, budget) else None), m.end("head"), 1
    if found is None or (m.start("head") == pos or text[pos] == "-") and found[1] not in _NAMED_FAMILIES:
        return None  # "6.0-sigma", "1cds": a constant or an odd dimension glued to a number is not a quantity
    return _form_index(*found), end, count


@lru_cache(maxsize=1024)
def _convertible(unit: str, to_unit: str) -> bool:
    """Whether pint converts between the two both ways (families that compare always do; this guards the rest)."""
    try:
        _affine(unit, to_unit), _affine(to_unit, unit)
    except Exception:  # noqa: BLE001 - pint's DimensionalityError, OffsetUnitCalculusError, ...
        return False
    return True


def convert(value: float, unit: str, to_unit: str) -> float:
    """`value` in pint `unit` expressed in `to_unit` (offsets included for temperatures)."""
    if unit == to_unit:
        return value
    scale, offset = _affine(unit, to_unit)
    return value * scale + offset



def _updated(q: Quantity, **changes) -> Quantity:
    """Set fields of a Quantity this module has just built and nobody else holds (dataclasses.replace is ~10x slower)."""
    for name, value in changes.items():
        object.__setattr__(q, name, value)
    return q


def _canonical(value: float, unit: str, family: str) -> float:
    return convert(value, unit, _canonical_unit(family, unit))


# Reading numbers.


@dataclass
class _Num:
    start: int
    end: int
    readings: list[tuple[float, float]]  # (value, precision) per reading
    integer: bool = False
    unit_index: int | None = None
    unit_end: int = 0
    propagated: bool = False
    identifier: bool = False
    repeat: int = 1  # "2 x 90°": stated twice
    dms: int = 0  # 60 once minutes of arc are joined to these degrees, 3600 once seconds are


def _prepare(text: str) -> str:
    if "\\" in text or "$" in text:
        text = _from_latex(text)
    text = _VULGAR_RE.sub(lambda m: _VULGAR[m.group()], text)
    if "'" in text or "’" in text:
        text = _APOSTROPHE_THOUSANDS.sub("", text)  # "6'500 U/min" (Swiss and some German manuals) is 6500
    text = unicodedata.normalize("NFKC", text)
    return _CONTROL.sub(" ", text)


def _decimals(digits: str, whole: str = "") -> float:
    """Half a step of the last printed digit. A whole number ending in three or more zeros ("60,000 km")
    is a round figure: its last zero is taken as printed, the others as rounding (60,000 is ±500)."""
    if digits:
        return 0.5 * 10 ** -len(digits)
    zeros = len(whole) - len(whole.rstrip("0"))
    return 0.5 * 10 ** (zeros - 1) if zeros >= 3 and whole.strip("0") else 0.5


def _read_number(m: re.Match, decimal_comma: bool | None, borrowed: bool = False) -> tuple[list[tuple[float, float]], bool]:
    if m.re is _WORD_NUM_RE:
        return _read_words(m)
    if m.group("sci"):  # 4e14, 9.83e-3, 5.5x10-3, 2.48×10−5
        exponent = int((m.group("exp") or m.group("exp2") or m.group("exp3")).replace("−", "-"))
        scale = 10.0 ** exponent
        return [(float(m.group("sci")) * scale, _decimals(m.group("scid") or "") * scale)], False
    if m.group("mw"):
        den = int(m.group("md"))
        if den == 0:
            return [], False
        return [(int(m.group("mw")) + int(m.group("mn")) / den, 0.0)], False
    if m.group("fn"):
        den = int(m.group("fd"))
        return ([(int(m.group("fn")) / den, 0.0)], False) if den else ([], False)
    if m.group("g"):
        text = m.group("g")
        whole, _, decimals = text.partition(".")
        thousands = (float(whole.replace(m.group("gs"), "") + ("." + decimals if decimals else "")),
                     _decimals(decimals, whole.replace(m.group("gs"), "")))
        if m.group("gs") == " " or decimals or text.count(",") > 1 or not decimal_comma:
            return [thousands], not decimals
        head, tail = text.split(",")
        decimal = (float(f"{head}.{tail}"), _decimals(tail))
        # An answer that does not say, read in the reference's decimal commas: "1,750 rpm" may still be thousands.
        return ([decimal, thousands] if borrowed else [decimal]), False
    if m.group("p"):
        text = m.group("p")
        if decimal_comma and not borrowed and re.fullmatch(r"[1-9]\d{0,2}\.\d{3}", text):
            return [(float(text.replace(".", "")), 0.5)], True  # "6.500 U/min" beside "0,5 mm": thousands
        whole, sep, decimals = text.replace(",", ".").partition(".")
        return [(float(text.replace(",", ".")), _decimals(decimals, whole))], not sep

    raise AssertionError("unreachable: every alternative of _NUM_RE is handled above")


def _is_fraction(numerator: int, denominator: int) -> bool:
    """3/16, 5/8, 1/2: a proper fraction in lowest terms; 28/32 or 20/30 is a pair of values."""
    return 0 < numerator < denominator and math.gcd(numerator, denominator) == 1


def _read_words(m: re.Match) -> tuple[list[tuple[float, float]], bool]:
    if m.group("one"):
        return [(1.0, 0.5)], True  # "a gallon"
    if m.group("onehalf"):
        return [(0.5, 0.0)], False
    words = m.group("w").replace("-", " ").split()
    total, current = 0, 0
    for word in words:
        if word == "hundred":
            current = max(current, 1) * 100
        elif word != "and":
            current += _WORD_VALUE[word]
    total += current
    if m.group("half"):
        return [(total + 0.5, 0.0)], False
    return [(float(total), 0.5)], True


def _notation(text: str) -> bool | None:
    """True: this text writes decimal commas; False: decimal points; None: it does not say."""
    comma, point = bool(_DECIMAL_COMMA.search(text)), bool(_DECIMAL_POINT.search(text))
    if comma != point:
        return comma
    return None


def _scan_numbers(text: str, low: str, decimal_comma: bool | None, temperature: bool = False,
                  borrowed: bool = False, ratio: bool = False) -> list[_Num]:
    """Numbers in text order, each with its unit if one follows; at most MAX_NUMBERS + 1 of them.

    `ratio`: the reference states ratios, so a bare decimal in the answer is one ("1st 3.538").
    """
    nums: list[_Num] = []
    budget = [MAX_NEW_UNITS]
    # Where an identifier word ("bolt", "step", "No.") ends: a number starting there names a thing.
    identifier_ends = {m.end() for m in _IDENTIFIER_WORD.finditer(low)}
    matches = [m for _, m in zip(range(MAX_NUMBERS + 1), _NUM_RE.finditer(text))]
    words = [m for _, m in zip(range(MAX_NUMBERS + 1), _WORD_NUM_RE.finditer(low))]
    if words:
        matches = sorted(matches + words, key=lambda m: m.start())
    for m in matches:
        if len(nums) > MAX_NUMBERS:
            break
        if m.re is _NUM_RE and m.group("g") and m.group("gs") == " " and m.start() in identifier_ends:
            # "step 2 100 Nm": the identifier's number, then the value, not 2100.
            first = text.index(" ", m.start())
            nums.append(_Num(m.start(), first, [(float(text[m.start():first]), 0.5)], True))
            rest = _NUM_RE.match(text, first + 1)
            if rest:
                readings, integer = _read_number(rest, decimal_comma, borrowed)
                nums.append(_Num(rest.start(), rest.end(), readings, integer))
            continue
        if m.re is _NUM_RE and m.group("fn") and not _is_fraction(int(m.group("fn")), int(m.group("fd"))):
            # "28/32 psi", "20/30 mm": two values sharing a unit (front/rear), not the fraction 7/8
            for part in ("fn", "fd"):
                nums.append(_Num(m.start(part), m.end(part), [(float(m.group(part)), 0.5)], True))
            continue
        readings, integer = _read_number(m, decimal_comma, borrowed)
        if readings:
            nums.append(_Num(m.start(), m.end(), readings, integer))
    for m in _TURN_RE.finditer(low) if "turn" in low else ():
        turns = _TURN_WORDS[int(m.lastgroup[1:])][1]
        num = _Num(m.start(), m.end(), [(turns, 0.0)], False, unit_end=m.end())
        num.unit_index = _TURN_UNIT
        nums.append(num)
    nums.sort(key=lambda n: n.start)
    # Drop numbers inside a turn phrase ("one and a half turns" holds the word "one").
    kept: list[_Num] = []
    for num in nums:
        if kept and num.start < kept[-1].end:
            if num.unit_index == _TURN_UNIT:
                whole = kept[-1]
                if whole.unit_index is None and num.readings == [(0.5, 0.0)] and whole.readings[0][0] % 1 == 0.5:
                    # "two and a half turns" (read as 2.5 by the words): 2.5 turns, not the half turn alone
                    num = _Num(whole.start, num.end, whole.readings, False, unit_end=num.end)
                    num.unit_index = _TURN_UNIT
                kept[-1] = num
            continue
        kept.append(num)
    # A '"' after a number closes a quotation when an odd number of the quotation marks before it are not units.
    quotes = [m.start() for m in re.finditer('"', text)] if '"' in text else []
    inch_marks = 0
    for num in kept:
        if num.unit_index is None:
            unit = _UNIT_RE.match(text, num.end)
            if (unit is None or unit.lastgroup == _KELVIN_GROUP) and _KILO.match(text, num.end):
                scaled = _UNIT_RE.match(text, num.end + 1)  # "0.5k miles", "100K km": thousands
                if scaled and int(scaled.lastgroup[1:]) not in _CONTEXT_UNITS:
                    num.readings = [(value * 1000, precision * 1000) for value, precision in num.readings]
                    num.end, num.integer, unit = num.end + 1, False, scaled
            if unit and unit.group() == '"':
                if (bisect.bisect_left(quotes, num.start) - inch_marks) % 2:
                    unit = None  # the closing quote of '"English 101"', not inches
                else:
                    inch_marks += 1
            if unit:
                num.unit_index = int(unit.lastgroup[1:])
                num.unit_end = unit.end()
            else:
                num.unit_index, num.unit_end, per = _read_unit(text, num.end, budget) or (None, 0, 1)
                if per != 1:
                    num.readings = [(value / per, precision / per) for value, precision in num.readings]
    for num in kept:
        # "6.500 U/min", "alle 120.000 km": German thousands points. An engine speed or a distance is never printed
        # with three decimals ending in zero, so there the point groups thousands.
        if num.unit_index is not None and _FORMS[num.unit_index][1] in ("speed", "distance") \
                and _THOUSANDS_POINT.fullmatch(text, num.start, num.end):
            num.readings, num.integer = [(float(text[num.start:num.end].replace(".", "")), 0.5)], True
    # A number inside the unit before it ("10.5:1", "800 1/min") is part of that unit.
    inside: list[_Num] = []
    for num in kept:
        if inside and inside[-1].unit_index is not None and num.start < inside[-1].unit_end:
            continue
        inside.append(num)
    kept = _resolve_symbols(text, low, inside, temperature)
    for num in kept:
        num.identifier = num.unit_index is None and bool(
            num.start in identifier_ends or _COUNT_AFTER.match(text, num.end) or _ORDINAL_AFTER.match(text, num.end))
    for before, num in zip(kept, kept[1:]):
        if before.identifier and num.unit_index is None and _RANGE_GAP.fullmatch(text[before.end:num.start]):
            num.identifier = True  # "bolts 1 to 6"
    if any(num.unit_index == _MICRON_UNIT for num in kept) and _VACUUM_WORD.search(low):
        # "evacuate to 500 microns": a vacuum in microns of mercury (HVAC), not a length
        for num in kept:
            if num.unit_index == _MICRON_UNIT and _VACUUM_WORD.search(low, max(0, num.start - SYMBOL_CONTEXT_CHARS), num.end + 40):
                num.unit_index = _MICRON_HG_UNIT
    if ratio or (any(word in low for word in _RATIO_HINTS) and _RATIO_WORD.search(low)):
        # Gear ratios printed bare ("Gear ratio: 1st 3.538, 2nd 2.045"): a decimal after the word is a ratio.
        for num in kept:
            if num.unit_index is None and not num.identifier and _DECIMAL.fullmatch(text, num.start, num.end) \
                    and (ratio or _RATIO_WORD.search(low, max(0, num.start - SYMBOL_CONTEXT_CHARS), num.start)):
                num.unit_index, num.unit_end = _RATIO_UNIT, num.end
    return kept


_TURN_UNIT = next(i for i, (_, unit, _) in enumerate(UNIT_FORMS) if unit == "turn")
_DEGREE_UNIT = next(i for i, (_, unit, _) in enumerate(UNIT_FORMS) if unit == "degree")
_ARCMIN_WORDS = next(i for i, (_, unit, _) in enumerate(UNIT_FORMS) if unit == "arcminute")
_ARCSEC_WORDS = next(i for i, (_, unit, _) in enumerate(UNIT_FORMS) if unit == "arcsecond")
_PRIME_UNIT, _DOUBLE_PRIME_UNIT, _KELVIN_UNIT, _PICO_UNIT, _ATTO_UNIT = (
    UNIT_FORMS.index(form) for form in (_PRIME, _DOUBLE_PRIME, _KELVIN_SYMBOL, _PICO_SYMBOL, _ATTO_SYMBOL))
_CONTEXT_UNITS = {_PRIME_UNIT, _DOUBLE_PRIME_UNIT, _KELVIN_UNIT, _PICO_UNIT, _ATTO_UNIT}
_KELVIN_GROUP = f"u{_KELVIN_UNIT}"
_RATIO_UNIT = next(i for i, (_, unit, _) in enumerate(UNIT_FORMS) if unit == "ratio_to_one")
_MICRON_UNIT = next(i for i, (_, unit, _) in enumerate(UNIT_FORMS) if unit == "micrometer")
_MICRON_HG_UNIT = next(i for i, (_, unit, _) in enumerate(UNIT_FORMS) if unit == "micrometer_Hg")
_VACUUM_WORD = re.compile(r"vacuum|evacuat|micron gauge|vakuum|vide\b")
_RATIO_WORD = re.compile(r"\bratios?\b|\brapport|übersetzung|untersetzung|\breduction\b|変速比|減速比")
_DECIMAL = re.compile(r"\d+[.,]\d+")
_RATIO_HINTS = ("ratio", "rapport", "setzung", "reduction", "比")  # a cheap test before _RATIO_WORD
_KILO = re.compile(r"[kK](?=[ \t])")
_THOUSANDS_POINT = re.compile(r"[1-9]\d{0,2}\.\d\d0")
# "1st", "2. Gang": a position; "3. Bleed the caliper", "2) Fit": a step's number
_ORDINAL_AFTER = re.compile(r"(?i:st|nd|rd|th)\b|\.[ \t]?(?i:gang|gear|stufe|vitesse)\b|\.[ \t]+(?=[A-Z])|\)[ \t]+(?=[A-Z])")
_DMS_GAP = re.compile(r"[ \t]?")  # 12°30′, 12° 30′ 15″
_PAIR_GAP = re.compile(r"[ \t]*[(\[/=][ \t]*")  # 2½′ (150″)
_BESIDE_GAP = re.compile(r"[ \t]*[(\[,;/=][ \t]*")  # 300 °C (572 °F, 573.15K)
_CLOCK = re.compile(r"(?:0?[1-9]|1[0-2])(?:[.:][0-5]\d)?")  # 2 pm, 2.30 pm, 11:45 am
_TEMPERATURE_WORD = re.compile(r"temperat|thermal|\bheat|\bkelvin|superheat|subcool|überhitzung|unterkühlung|surchauffe")
SYMBOL_CONTEXT_CHARS = 60  # how far back a word such as "temperature" makes a bare K a kelvin


def _times(a: _Num, b: _Num, factor: float) -> bool:
    return math.isclose(b.readings[0][0], factor * a.readings[0][0], rel_tol=1e-9)


def _arc_tolerance(text: str, before: _Num | None, num: _Num) -> bool:
    """A prime or double prime that is the tolerance or the other end of an angle: "0°30′ ± 30′"."""
    return before is not None and before.unit_index in (_DEGREE_UNIT, _PRIME_UNIT, _ARCMIN_WORDS, _ARCSEC_WORDS) \
        and not before.propagated and bool(_TOL_GAP.fullmatch(text, before.unit_end, num.start)
                                           or _RANGE_GAP.fullmatch(text, before.unit_end, num.start))


def _resolve_symbols(text: str, low: str, nums: list[_Num], temperature: bool = False) -> list[_Num]:
    """Read the symbols that mean two things by their neighbours; join degrees, minutes and seconds of arc.

    `temperature`: the reference states a temperature, so a bare K in the answer is kelvin.
    """
    if not any(num.unit_index in _CONTEXT_UNITS for num in nums):
        return nums
    for i, num in enumerate(nums):
        unit = num.unit_index
        if unit not in _CONTEXT_UNITS:
            continue
        before = nums[i - 1] if i else None
        after = nums[i + 1] if i + 1 < len(nums) else None
        if unit == _PRIME_UNIT:  # a prime is a foot (not read here) unless arc says otherwise
            arc = (before is not None and before.unit_index == _DEGREE_UNIT and not before.propagated
                   and _DMS_GAP.fullmatch(text, before.unit_end, num.start)) \
                or (after is not None and after.unit_index in (_DOUBLE_PRIME_UNIT, _ARCSEC_WORDS)
                    and _PAIR_GAP.fullmatch(text, num.unit_end, after.start) and _times(num, after, 60))
            keep = bool(arc) or _arc_tolerance(text, before, num) or (
                # "+5′ ± 5′", "0′ to +10′": minutes of arc with their tolerance or the other end
                after is not None and after.unit_index == _PRIME_UNIT
                and bool(_TOL_GAP.fullmatch(text, num.unit_end, after.start) or _RANGE_GAP.fullmatch(text, num.unit_end, after.start)))
        elif unit == _DOUBLE_PRIME_UNIT:  # inches unless after degrees or minutes of arc
            if before is not None and not before.propagated and (
                    (before.unit_index in (_DEGREE_UNIT, _PRIME_UNIT) and _DMS_GAP.fullmatch(text, before.unit_end, num.start))
                    or (before.unit_index in (_PRIME_UNIT, _ARCMIN_WORDS)
                        and _PAIR_GAP.fullmatch(text, before.unit_end, num.start) and _times(before, num, 60))):
                num.unit_index = _ARCSEC_WORDS
            elif _arc_tolerance(text, before, num):
                num.unit_index = _ARCSEC_WORDS
            continue
        elif unit == _KELVIN_UNIT:  # a bare K beside another temperature, after the word, or answering one
            keep = temperature or any(other is not None and other.unit_index != _KELVIN_UNIT and _family(other) == "temperature"
                       and _BESIDE_GAP.fullmatch(text, *span) for other, span in
                       ((before, (_end(before), num.start) if before else (0, 0)),
                        (after, (num.unit_end, after.start) if after else (0, 0)))) \
                or bool(_TEMPERATURE_WORD.search(low, max(0, num.start - SYMBOL_CONTEXT_CHARS), num.start))
        else:  # pm, am: a time of day when the number reads as a clock time
            clock = (num.integer and 1 <= num.readings[0][0] <= 12) or _CLOCK.fullmatch(text, num.start, num.end) \
                or text[max(0, num.start - 1):num.start] == ":"
            keep = not clock
        if not keep:
            num.unit_index, num.unit_end = None, 0
    joined: list[_Num] = []
    for num in nums:
        prev = joined[-1] if joined else None
        factor = {_PRIME_UNIT: 60, _ARCSEC_WORDS: 3600}.get(num.unit_index)
        if factor and prev is not None and (prev.unit_index == _DEGREE_UNIT or prev.dms) and not prev.propagated \
                and prev.dms < factor and _DMS_GAP.fullmatch(text, prev.unit_end, num.start):
            # 7°30′ is 450′ as printed: compared with "7.5°" by rounding, with "7°30′" exactly.
            scale = factor // (prev.dms or 1)
            prev.readings = [(v * scale + w, q) for v, _ in prev.readings for w, q in num.readings]
            prev.unit_index, prev.unit_end, prev.dms = num.unit_index, num.unit_end, factor
            continue
        joined.append(num)
    return joined


def _family(num: _Num) -> str | None:
    return None if num.unit_index is None else _FORMS[num.unit_index][1]


def _end(num: _Num) -> int:
    return num.unit_end if num.unit_index is not None and not num.propagated else num.end


def _gap(text: str, a: _Num, b: _Num) -> str:
    return text[_end(a):b.start] if b.start - _end(a) <= 60 else "\x00"


def _propagate_units(text: str, nums: list[_Num]) -> None:
    """A unit written once for several values: "15 then 30 Nm", "0.10 ~ 0.15 mm", "10 ± 1 Nm"."""
    for i in range(len(nums) - 2, -1, -1):
        num, after = nums[i], nums[i + 1]
        if num.unit_index is not None or num.identifier or after.unit_index is None or after.identifier \
                or (num.integer and 1900 <= num.readings[0][0] <= 2099):  # "in 2013, and 278,000 t": a year
            continue
        gap = _gap(text, num, after)
        if _RANGE_GAP.fullmatch(gap) or _TOL_GAP.fullmatch(gap) or _OR_GAP.fullmatch(gap) \
                or (_BETWEEN_BEFORE.search(text, max(0, num.start - 12), num.start) and _BETWEEN_AND.fullmatch(gap)) \
                or (_LIST_GAP.fullmatch(gap) and _family(after) in LIST_FAMILIES):
            num.unit_index, num.unit_end, num.propagated = after.unit_index, after.unit_end, True


# Building quantities from numbers.


def _build(text: str, start: int, end: int, unit_index: int, ends: list[list[tuple[float, float]]],
           signs: tuple[float, ...] = ()) -> Quantity:
    """A quantity from its numbers: ends[0] the low reading(s), ends[1] the high one(s) if a range."""
    units, family = _FORMS[unit_index]
    readings: list[tuple[float, float | None]] = []
    for low in ends[0]:
        for high in (ends[1] if len(ends) > 1 else [None]):
            lo = low[0] * (signs[0] if signs else 1)
            hi = None if high is None else high[0] * (signs[1] if len(signs) > 1 else 1)
            if hi is not None and hi < lo:
                lo, hi = hi, lo
            if hi == lo:
                hi = None
            readings.append((lo, hi, max(low[1], 0 if high is None else high[1])))
    lo, hi, precision = readings[0]
    return Quantity(_canonical(lo, units[0], family), None if hi is None else _canonical(hi, units[0], family),
                    family, text[start:end].strip(), unit=units[0], units=units, readings=tuple(readings),
                    precision=precision, start=start, end=end)


# A unit written once after a list of values ("15 then 30 Nm", "45 and 50 mg") belongs to each of them.
LIST_FAMILIES = SEQUENCE_FAMILIES + ("length", "pressure", "volume", "mass", "force", "voltage", "current", "resistance",
                                     "power", "percent")
SIGNED_FAMILIES = ("temperature", "angle", "length", "pressure", "percent", "voltage", "current")


def _sign(text: str, num: _Num, family: str) -> float:
    """-1 for a minus glued to the number ("-18 °C", camber "−0°30′", toe "-2 mm", "-0.5 bar" of vacuum).

    Only where a value can be negative; elsewhere, and after a digit or a letter ("8-10 mm", "S14-2.3 L"), a
    minus is a dash.
    """
    if family in SIGNED_FAMILIES and num.start and text[num.start - 1] in "-−–‐‑‒" \
            and (num.start < 2 or not text[num.start - 2].isalnum()):
        return -1.0
    return 1.0


def _group(text: str, nums: list[_Num]) -> list[Quantity]:
    quantities: list[Quantity] = []
    i = 0
    while i < len(nums):
        num = nums[i]
        if num.unit_index is None:
            if i + 1 < len(nums) and num.integer and 2 <= num.readings[0][0] <= 4 \
                    and _TIMES_GAP.fullmatch(_gap(text, num, nums[i + 1])) and _family(nums[i + 1]) in SEQUENCE_FAMILIES:
                nums[i + 1].repeat = int(num.readings[0][0])
            i += 1
            continue
        family = _family(num)
        nxt = nums[i + 1] if i + 1 < len(nums) else None
        gap = _gap(text, num, nxt) if nxt else "\x00"
        same_family = nxt is not None and _family(nxt) == family
        same_unit = same_family and (nxt.unit_index == num.unit_index or nxt.unit_index is None
                                     or (family == "angle" and not num.propagated))  # "-1°30′ to 0°"
        between = _BETWEEN_BEFORE.search(text, max(0, num.start - 12), num.start)
        unit_index = nxt.unit_index if nxt is not None and num.propagated and nxt.unit_index is not None else num.unit_index
        if nxt and same_unit and (_RANGE_GAP.fullmatch(gap) or (between and _BETWEEN_AND.fullmatch(gap))):
            sign = _sign(text, num, family)
            start = between.start() if between else num.start - (sign < 0)
            high = nxt.readings
            if nxt.unit_index not in (None, unit_index):  # "-1°30′ to 0°": both ends in the first one's unit
                scale = convert(1.0, _pint_unit(nxt.unit_index), _pint_unit(unit_index))
                high = [(value * scale, precision * scale) for value, precision in nxt.readings]
            q = _build(text, start, _end(nxt), unit_index, [num.readings, high], (sign, _sign(text, nxt, family)))
            i += 2
        elif nxt and family != "percent" and _family(nxt) == "percent" and _TOL_GAP.fullmatch(gap):
            # "1.5 kΩ ± 10 %": a relative tolerance, 1.35–1.65 kΩ
            share = nxt.readings[0][0] / 100
            ends = [[(v * (1 - share), max(p, abs(v) * nxt.readings[0][1] / 100)) for v, p in num.readings],
                    [(v * (1 + share), max(p, abs(v) * nxt.readings[0][1] / 100)) for v, p in num.readings]]
            q = _build(text, num.start, _end(nxt), num.unit_index, ends)
            i += 2
        elif nxt and (same_family or nxt.unit_index is None) and _TOL_GAP.fullmatch(gap):
            q = _tolerance(text, num, [(nxt, 1.0), (nxt, -1.0)], _end(nxt), unit_index)
            i += 2
        elif nxt and i + 2 < len(nums) and (same_unit or nxt.unit_index is None) and _PLUS_GAP.fullmatch(gap) \
                and _SLASH_MINUS_GAP.fullmatch(_gap(text, nxt, nums[i + 2])) \
                and _family(nums[i + 2]) in (None, family):
            q = _tolerance(text, num, [(nxt, 1.0), (nums[i + 2], -1.0)], _end(nums[i + 2]), unit_index)
            i += 3
        elif _LONE_TOLERANCE.search(text, max(0, num.start - 4), num.start):
            # "within ±10 %", "runout ± 0.05 mm": a range around zero
            q = _build(text, text.rfind("±", 0, num.start), _end(num), num.unit_index,
                       [[(-v, p) for v, p in num.readings], num.readings])
            i += 1
        else:
            sign = _sign(text, num, family)
            q = _build(text, num.start - (sign < 0), _end(num), num.unit_index, [num.readings], (sign,))
            i += 1
        repeat = num.repeat
        after = _REPEAT_AFTER.match(text, q.end)
        if after and q.family in SEQUENCE_FAMILIES:
            repeat = 3 if after.group("thrice") else int(after.group("n") or after.group("n2") or 2)
            q = _updated(q, raw=text[q.start:after.end()].strip(), end=after.end())
        if q.family == "temperature" and _DIFFERENCE_WORD.search(text, max(0, q.start - 40), q.end + 30):
            q = _as_difference(q)
        quantities.extend([q] * repeat)
    return quantities


_DIFFERENCE_WORD = re.compile(r"(?i:superheat|subcool|überhitzung|unterkühlung|surchauffe|sous-refroidissement|"
                              r"temperature\s+(?:rise|drop|difference|differential|split)\b(?!\s+to\b)|"
                              r"\bdelta[\s-]?t\b|Δ\s?t|above\s+ambient|below\s+ambient)")
_DIFFERENCE_UNITS = {"degree_Celsius": "delta_degree_Celsius", "degree_Fahrenheit": "delta_degree_Fahrenheit"}


_REREAD = {"ounce": "fluid_ounce", "micrometer": "micrometer_Hg"}


def _as_unit(q: Quantity, unit: str) -> Quantity:
    """The same printed numbers in another unit, for a symbol its context reads otherwise."""
    family = _family_of(unit) or q.family
    low, high, _ = q.readings[0]
    return _updated(q, unit=unit, units=(unit,), family=family, value=_canonical(low, unit, family),
                    high=None if high is None else _canonical(high, unit, family))


def _as_difference(q: Quantity) -> Quantity:
    """A temperature difference ("superheat 10 °F" is 5.6 K, not −12.2 °C): converted by scale, never by offset."""
    units = tuple(_DIFFERENCE_UNITS.get(unit, unit) for unit in q.units)
    family = "temperature difference"
    low, high, _ = q.readings[0]
    return _updated(q, family=family, units=units, unit=units[0], value=_canonical(low, units[0], family),
                    high=None if high is None else _canonical(high, units[0], family))


def _tolerance(text: str, num: _Num, parts: list[tuple[_Num, float]], end: int, unit_index: int) -> Quantity:
    up, down = (_in_unit(part, unit_index) for part, _ in parts)
    sign = _sign(text, num, _FORMS[unit_index][1])  # camber "−0°30′ ± 30′" is −60′ to 0′
    high = [(sign * v + up[0], max(p, up[1])) for v, p in num.readings]
    low = [(sign * v - down[0], max(p, down[1])) for v, p in num.readings]
    return _build(text, num.start - (sign < 0), end, unit_index, [low, high])


def _pint_unit(unit_index: int) -> str:
    return _FORMS[unit_index][0][0]


def _in_unit(part: _Num, unit_index: int) -> tuple[float, float]:
    """A tolerance's (value, precision) in the unit of its value: "0°30′ ± 30′" is ± 0.5°."""
    value, precision = part.readings[0]
    if part.unit_index is None or part.unit_index == unit_index:
        return value, precision
    unit, to_unit = _pint_unit(part.unit_index), _pint_unit(unit_index)
    scale = convert(1.0, unit, to_unit) - convert(0.0, unit, to_unit)  # a difference: no temperature offset
    return value * scale, precision * scale


def _fold_equivalents(text: str, found: list[Quantity]) -> list[Quantity]:
    """'45 Nm (33 ft-lb)' and '45 Nm / 33 ft-lb' are one quantity; '30 or 35 Nm' is a hedge."""
    out: list[Quantity] = []
    i = 0
    while i < len(found):
        head = found[i]
        j = i + 1
        equivalents: list[Quantity] = []
        opening = _OPEN_GAP.match(text, head.end)
        if opening and j < len(found) and found[j].start == opening.end():
            close = text.find(_CLOSE[opening.group().strip(" \t\n*_.")[0]], opening.end(), opening.end() + 80)
            while close != -1 and j < len(found) and found[j].end <= close and compatible(found[j].family, head.family) \
                    and found[j].unit != head.unit and _EQUIV_FILL.fullmatch(text[equivalents[-1].end if equivalents else found[j].start:found[j].start]):
                equivalents.append(found[j])
                j += 1
            if equivalents:
                head = _updated(head, raw=text[head.start:close + 1].strip(), end=close + 1) \
                    if not text[equivalents[-1].end:close].strip(" ,;") else head
        elif j < len(found) and compatible(found[j].family, head.family) and found[j].unit != head.unit \
                and _EQUIV_GAP.fullmatch(text[head.end:found[j].start]):
            equivalents.append(found[j])
            head = _updated(head, raw=text[head.start:found[j].end].strip(), end=found[j].end)
            j += 1
        elif j < len(found) and found[j].unit == head.unit and found[j].role == head.role == "spec" \
                and _OR_GAP.fullmatch(text[head.end:found[j].start]) and found[j].readings != head.readings:
            out.append(_updated(head, hedge=found[j].raw))
            out.append(_updated(found[j], hedge=head.raw))
            i = j + 1
            continue
        # "475 cc (16.1 US oz) per leg": the words after the equivalent name the value too
        out.append(_updated(head, equivalents=tuple(equivalents), names=head.names.union(*(e.names for e in equivalents)))
                   if equivalents else head)
        i = j
    return out


def _roles(text: str, low: str, quantities: list[Quantity], sentence_ends: list[int]) -> list[Quantity]:
    """Spec, condition or incidental. A speed or temperature after "at", "when", "with" ... is the condition of a
    sentence that states a value of another family; a value of any family after "at" is the condition of a
    sentence that states one of another dimension not itself after "at" ("14.2 V at 5,000 rpm", "185 cc/min at
    3.0 bar", "45 kg at 40 mm")."""
    sentence_of = [bisect.bisect_left(sentence_ends, q.start) for q in quantities]
    others: dict[int, int] = defaultdict(int)  # per sentence: values a speed or temperature could be the condition of
    for q, sentence in zip(quantities, sentence_of):
        if q.family not in ("speed", "temperature"):
            others[sentence] += 1
    incidental_ends = {m.end() for m in _INCIDENTAL_BEFORE.finditer(low)}
    condition_ends = {m.end() for m in _CONDITION_BEFORE.finditer(low)} if any(
        q.family in ("speed", "temperature") for q in quantities) else set()
    at_ends = {m.end() for m in _AT_BEFORE.finditer(low)} if len(quantities) > 1 else set()
    free: dict[int, set[str]] = defaultdict(set)  # per sentence: dimensions stated not after "at"
    for q, sentence in zip(quantities, sentence_of):
        if q.start not in at_ends:
            free[sentence].add(_dimension(q.family))
    # A heading before a colon: its values of a dimension the values after the colon do not have are conditions
    # ("Insulation resistance (500 V DC megger): above 10 MΩ", "Ground idle at OAT 15 °C: 62 % N1").
    colon: dict[int, int] = defaultdict(lambda: -1)
    after_colon: dict[int, set[str]] = defaultdict(set)
    for q, sentence in zip(quantities, sentence_of) if ":" in text else ():
        if sentence not in colon:
            start = sentence_ends[sentence - 1] if sentence else 0
            colon[sentence] = text.find(":", start, sentence_ends[sentence])
        if -1 < colon[sentence] < q.start:
            after_colon[sentence].add(_kind(q.family))
    out = []
    for q, sentence in zip(quantities, sentence_of):
        role = "spec"
        if q.family in ("length", "distance") and (_INCIDENTAL_AFTER.match(text, q.end) or q.start in incidental_ends):
            # "17 mm socket", "M10 x 1.25": the size of a tool or part; "130 Nm drive shaft nut" is still a torque
            role = "incidental"
        elif q.end <= colon[sentence] and after_colon[sentence] and _kind(q.family) not in after_colon[sentence]:
            role = "condition"
        elif q.family in ("speed", "temperature") and others[sentence] and (
                q.start in condition_ends or q.raw[:8].lower() in ("between ", "from ")
                or (q.family == "speed" and text[max(0, q.start - 3):q.start].rstrip().endswith("/"))):  # "7.5 kW/8,000 min⁻¹"
            role = "condition"
        elif q.start in at_ends and free[sentence] - {_dimension(q.family)}:
            role = "condition"
        out.append(_updated(q, role=role) if role != "spec" else q)
    return out


_LEAD_GAP = re.compile(r"[ \t]*[:=]?[ \t]*")
_CONDITION_GAP = re.compile(r"(?i:[\s,]*[(\[]?\s*(?:(?:at|@|with|when|measured|the|engine|oil|coolant|speed|temperature|of)\s*)*)")


def _qualifier(text: str, q: Quantity, clause_start: int, before: list[tuple[int, int, str]], ends: list[int]) -> str | None:
    n = bisect.bisect_right(ends, q.start) - 1
    found = None
    if n >= 0:
        start, end, name = before[n]
        if start >= clause_start and q.start - end <= QUALIFIER_REACH and not _CLAUSE_BREAK.search(text, end, q.start):
            found = name
    if found in (None, "limit", "named limit"):  # "使用限度 36.5 mm以上": the word after says which limit
        bracket = _BRACKET_AFTER.match(text, q.end)  # "40 km/h (25 mph) or more"
        for name, pattern in _QUALIFIER_AFTER:
            if pattern.match(text, q.end) or (bracket and pattern.match(text, bracket.end())):
                return name if found is None or name != "limit" else found
    return found


def _attach(text: str, low: str, quantities: list[Quantity], names: bool = True) -> list[Quantity]:
    """Labels, qualifiers and conditions, each bound to the spec values of its clause."""
    sentence_ends = [m.start() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    quantities = _roles(text, low, quantities, sentence_ends)

    segment_ends = [m.start() for m in _SEGMENT_END.finditer(low)] + [len(text)]
    specs = [k for k, q in enumerate(quantities) if q.role == "spec"]

    labels: dict[int, list[tuple[str, str]]] = {k: [] for k in specs}
    spec_segments = {k: bisect.bisect_left(segment_ends, quantities[k].start) for k in specs}
    spec_sentences = {k: bisect.bisect_left(sentence_ends, quantities[k].start) for k in specs}
    by_segment: dict[int, list[int]] = defaultdict(list)
    by_sentence: dict[int, list[int]] = defaultdict(list)
    for k in specs:
        by_segment[spec_segments[k]].append(k)
        by_sentence[spec_sentences[k]].append(k)
    spec_starts = [quantities[k].start for k in specs]
    spec_ends = [quantities[k].end for k in specs]
    all_starts = [q.start for q in quantities]
    found_labels = []
    matches = list(_LABEL_RE.finditer(low))
    if "IN" in text or "EX" in text:  # capitals only: "IN 0.15 mm, EX 0.25 mm", "IN/EX 0.15/0.25 mm"
        matches = sorted(matches + list(_VALVE_CAPITALS.finditer(text)), key=lambda m: m.start())
    for m in matches:
        kind, value = _label(m)
        inside = bisect.bisect_right(all_starts, m.start()) - 1
        if kind == "size" and inside >= 0 and m.start() < quantities[inside].end:
            continue  # the "M8" of "M8 x 1.25 mm" already read as an incidental size
        found_labels.append((m, kind, value, bisect.bisect_left(segment_ends, m.start())))
    label_starts: dict[tuple[int, str], list[int]] = defaultdict(list)  # per segment and kind, in text order
    for m, kind, _, segment in found_labels:
        label_starts[segment, kind].append(m.start())
    paired: set[int] = set()
    segment_starts: dict[int, list[int]] = {}
    for i, ((m1, kind1, value1, _), (m2, kind2, value2, _)) in enumerate(zip(found_labels, found_labels[1:])):
        # "Intake/exhaust: 0.20/0.30 mm", "Front/rear 2.2/2.4 bar": two labels, then two values, pair in order
        n = bisect.bisect_left(spec_starts, m2.end())
        if kind1 == kind2 and text[m1.end():m2.start()].strip() == "/" and n + 1 < len(specs) \
                and not text[m2.end():spec_starts[n]].strip(" \t:=") \
                and text[quantities[specs[n]].end:spec_starts[n + 1]].strip() == "/":
            labels[specs[n]].append((kind1, value1))
            labels[specs[n + 1]].append((kind2, value2))
            paired |= {i, i + 1}
    for index, (m, kind, value, segment) in enumerate(found_labels):
        if index in paired:
            continue
        targets = by_segment.get(segment, [])
        starts = label_starts[segment, kind]
        if len(targets) > 1 and len(starts) > 1:
            # Two labels of one kind in a segment ("Stage 1: 39 Nm / Stage 2: 90°" without a break):
            # each takes the values up to the next label of its kind.
            n = bisect.bisect_left(starts, m.start())
            upto = starts[n + 1] if n + 1 < len(starts) else len(text)
            since = starts[n - 1] if n else -1
            starts_of = segment_starts.get(segment)  # the segment's values' starts, in text order
            if starts_of is None:
                starts_of = segment_starts[segment] = [quantities[k].start for k in targets]
            lo, hi = bisect.bisect_right(starts_of, m.start()), bisect.bisect_left(starts_of, upto)
            after = targets[lo:hi]
            targets = after or targets[bisect.bisect_right(starts_of, since):bisect.bisect_left(starts_of, m.start())][-1:]

        if not targets:  # "For M10 bolts, 45 Nm": the next value of the sentence
            n = bisect.bisect_left(spec_starts, m.end())
            if n < len(specs) and spec_sentences[specs[n]] == bisect.bisect_left(sentence_ends, m.start()) \
                    and not any(kd == kind for kd, _ in labels[specs[n]]):
                targets = [specs[n]]
        for k in targets:
            if (kind, value) not in labels[k]:
                labels[k].append((kind, value))

    conditions: dict[int, list[Condition]] = {k: [] for k in specs}
    seen: dict[int, set[tuple]] = {k: set() for k in specs}
    said: set[tuple] = set()
    colons = [i for i, c in enumerate(text) if c == ":"] if ":" in text else []
    mentions: list[tuple[int, int, Condition]] = []
    words = list(_CONDITION_WORDS.finditer(low))
    if any(hint in low for hint in _WITH_HINTS):
        words += _WITH_WORDS.finditer(low)
    if "in " in low or "im " in low or "en " in low:
        words += _SELECTOR_WORDS.finditer(low)
    for m in words:
        if m.lastgroup == "gear":
            positions = sorted({_SELECTOR.get(p, p) for p in re.findall(r"[a-z]+", m.group("gear")) if p not in ("or", "and")})
            mentions.append((m.start(), m.end(), Condition("selector", "/".join(positions), None, m.group())))
            continue
        if m.lastgroup in ("with", "without"):
            thing = m.group().split()[-1].removeprefix("l'")  # "with filter change" and "without filter" agree on "filter"
            condition = Condition(f"with {thing}", m.lastgroup, None, m.group())
        else:
            word = {"idling": "idle", "idle2": "idle", "cold2": "cold", "hot2": "hot"}.get(m.lastgroup, m.lastgroup)
            condition = Condition(_WORD_CONDITION[m.lastgroup], word, None, m.group())
        mentions.append((m.start(), m.end(), condition))
    for q in quantities:
        if q.role == "condition":
            mentions.append((q.start, q.end, Condition(q.family, None, q, q.raw)))
    for start, end, condition in mentions:
        n = bisect.bisect_right(spec_ends, start) - 1  # the spec value ending last before the mention
        ahead = bisect.bisect_left(spec_starts, end)  # "kalt 0,20 mm; warm 0,25 mm": a word just before its value
        if condition.word and ahead < len(specs) and _LEAD_GAP.fullmatch(text, end, spec_starts[ahead]):
            targets = [specs[ahead]]
        elif n >= 0 and start - spec_ends[n] <= 60 and _CONDITION_GAP.fullmatch(text, spec_ends[n], start):
            targets = [specs[n]]
        else:
            sentence = bisect.bisect_left(sentence_ends, start)
            key = (condition.dimension, condition.word, condition.raw.lower() if condition.word else condition.raw)
            if (sentence, key) in said:
                continue  # a condition said again in the same sentence ("hot ... hot") binds nothing new
            said.add((sentence, key))
            targets = by_sentence.get(sentence, [])
        for k in targets:
            n = bisect.bisect_left(colons, end)
            heading = end <= quantities[k].start and n < len(colons) and colons[n] < quantities[k].start
            key = (condition.dimension, condition.word, condition.raw.lower() if condition.word else condition.raw, heading)
            if key in seen[k]:
                continue  # "hot" said 200 times is one condition
            seen[k].add(key)
            conditions[k].append(Condition(condition.dimension, condition.word, condition.quantity, condition.raw, True)
                                 if heading else condition)

    qualifiers = []
    for m in _QUALIFIER_BEFORE.finditer(low):
        name = m.lastgroup.rstrip("2")
        if name in _FLIP and low[m.start():m.start() + 3] not in ("not", "no ") \
                and _NEGATED.search(low, max(0, m.start() - 30), m.start()):
            name = _FLIP[name]  # "must not fall below 3 mm" is a minimum, "no greater than" a maximum
        if _NAMED_AFTER.match(low, m.end()) or _NAMED_BEFORE.search(low, max(0, m.start() - 20), m.start()):
            name = "named " + name  # "Max. torque: 230 Nm": a name, which must not be contradicted
        qualifiers.append((m.start(), m.end(), name))
    qualifier_ends = [end for _, end, _ in qualifiers]
    out = list(quantities)
    for k in specs:
        q = quantities[k]
        segment = spec_segments[k]
        clause_start = segment_ends[segment - 1] if segment else 0
        stage = next((int(v) for kind, v in labels[k] if kind == "stage" and v.isdigit()), None)
        before = max(clause_start, quantities[k - 1].end if k else 0, q.start - NAME_REACH)
        after = min(segment_ends[min(segment, len(segment_ends) - 1)], quantities[k + 1].start if k + 1 < len(quantities) else len(text), q.end + NAME_REACH)
        out[k] = _updated(q, labels=tuple(sorted(labels[k])), qualifier=_qualifier(text, q, clause_start, qualifiers, qualifier_ends),
                         conditions=tuple(conditions[k]), stage=stage,
                         names=_value_names(text[before:q.start], text[q.end:after]) if names else frozenset())
    return out


# Names. The words around a value in its clause name it ("on at 92 °C", "IN 0.15 mm", "fully open 95 °C", "3.5 bar at
# rated speed"). Where a reference names several values of one dimension apart, an answer's value that carries only
# another value's distinctive words is that other value: a swap fails. A lone value's name has opposites
# ("toe-in"/"toe-out", "BTDC"/"ATDC", "on"/"off"). The same name in the languages manuals are written in reads as one.
NAME_REACH = 60  # characters before and after a value that can name it
_NAME_SYNONYMS = {
    "intake": ("inlet", "IN", "admission", "adm", "einlass", "einlaß", "ansaug", "admisión", "admision",
               "aspirazione", "aspirazion", "吸気", "吸入"),
    "exhaust": ("EX", "échappement", "echappement", "éch", "auslass", "auslaß", "escape", "scarico", "排気"),
    "front": ("avant", "av", "vorn", "vorne", "vorderachse", "前", "フロント"),
    "rear": ("arrière", "arriere", "ar", "hinten", "hinterachse", "後", "リヤ", "リア"),
    "upper": ("top", "oben", "obere", "supérieur", "superieur", "haut", "上"),
    "lower": ("bottom", "unten", "untere", "inférieur", "inferieur", "bas", "下"),
    "left": ("lh", "links", "linke", "gauche", "左"),
    "right": ("rh", "rechts", "rechte", "droite", "右"),
    "inner": ("inside", "innen", "innere", "intérieur", "interieur", "内"),
    "outer": ("outside", "außen", "aussen", "äußere", "extérieur", "exterieur", "外"),
    "up": ("raised", "raise", "nose-up"),
    "down": ("lowered", "lower-position", "nose-down"),
    "primary": ("lt", "low-tension", "primär", "primaire", "一次"),
    "secondary": ("ht", "high-tension", "sekundär", "secondaire", "二次"),
    "main": ("mlg",),
    "nose": ("nlg",),
    "manual": ("bvm", "mt", "schaltgetriebe", "manuelle", "manuel"),
    "automatic": ("auto", "bva", "automatik", "automatique"),
    "on": ("ein", "enclenchement", "cutin", "cutsin", "closes"),
    "off": ("aus", "déclenchement", "declenchement", "cutout", "cutsout"),
    "btdc": ("vot", "beforetdc", "avantpmh", "vorot", "btc", "advance", "advanced", "上死点前"),
    "atdc": ("aftertdc", "pasttdc", "aprèspmh", "aprespmh", "nachot", "atc", "retard", "retarded", "上死点後"),
    "toein": ("vorspur", "pincement"),
    "toeout": ("nachspur", "ouverture"),  # French "ouverture" is toe-out (not "opening")
    "idle": ("idling", "leerlauf", "ralenti"),
    "open": ("opens", "opening", "öffnet", "geöffnet", "öffnung", "ouverture-thermostat"),
    "start": ("starts", "begin", "begins", "beginning", "beginn", "début", "debut"),
    "fully": ("full", "pleine", "voll"),
    "each": ("per", "every", "je", "pro", "par"),
    "total": ("both", "together", "gesamt", "insgesamt", "ensemble"),
}
_CANONICAL_NAME = {word.casefold() if not word.isupper() else word: name
                   for name, words in _NAME_SYNONYMS.items() for word in words}
# German compounds and Japanese words hold names inside them: "Einlassventile", "Öffnungsbeginn", "吸気側".
_NAME_INFIXES = tuple((word, name) for word, name in _CANONICAL_NAME.items()
                      if (len(word) >= 5 and word.isalpha()) or not word.isascii())
_OPPOSITES = {"on": "off", "intake": "exhaust", "front": "rear", "manual": "automatic", "btdc": "atdc", "toein": "toeout",
              "upper": "lower", "inner": "outer", "left": "right", "each": "total", "before": "after", "up": "down",
              "primary": "secondary", "main": "nose", "start": "fully", "clockwise": "counterclockwise",
              "negative": "positive", "laden": "unladen", "installed": "removed"}
_OPPOSITES |= {b: a for a, b in _OPPOSITES.items()} | {"anticlockwise": "clockwise", "out": "in"}
_NAME_JOINS = re.compile(r"(?i:\b(toe|cuts?|before|after|past|avant|après|apres|vor|nach|low|high)[\s-]+(in|out|tdc|pmh|ot|tension)\b)")
_TDC = re.compile(r"(?i:top\s+dead\s+cent(?:re|er)|t\.d\.c\.)")
_NAME_WORD = re.compile(r"\d(?:st|nd|rd|th)\b|[^\W\d_]+\d*")  # "1st" and "2nd" name gears, "N1" a spool
_NOT_NAMES = frozenset(
    "the a an is are be should must will to at of and then it its this that for as by from with about approx "
    "approximately ca set max maximum min minimum limit mini maxi mind der die das le la les de du des "
    "et und à a bei am im mit".split())


@lru_cache(maxsize=4096)
def _names(window: str) -> frozenset[str]:
    words = set()
    for word in _NAME_WORD.findall(_NAME_JOINS.sub(r"\1\2", _TDC.sub("tdc", window))):
        name = _CANONICAL_NAME.get(word) or _CANONICAL_NAME.get(word.casefold())
        if name is None and (len(word) >= 8 or not word.isascii()):
            low = word.casefold()
            inside = {n for w, n in _NAME_INFIXES if w in low}
            if inside:
                words |= inside
                continue
        if name is None:
            word = word.casefold()
            name = word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word
        if name not in _NOT_NAMES and (len(name) > 1 or not name.isascii()):
            words.add(name)
    return frozenset(words)


def _value_names(before: str, after: str) -> frozenset[str]:
    """The names of a value from the words before and after it in its clause."""
    words = _names(before) | _names(after)
    if "toe" in words and ("out" in words or "in" in words):  # "toe 2 mm out"
        words |= {"toeout" if "out" in words else "toein"}
    return words


def _kinds(wanted: list[Quantity]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, want in enumerate(wanted):
        groups[_kind(want.family)].append(i)
    return groups


def _distinct_names(wanted: list[Quantity], groups: dict[str, list[int]]) -> list[frozenset[str]]:
    """Per reference value: the words that name it apart from the other values of its kind (all its words when
    it is the only one)."""
    out = []
    for want in wanted:
        group = groups[_kind(want.family)]
        out.append(want.names - frozenset.intersection(*(wanted[k].names for k in group)) if len(group) > 1 else want.names)
    return out


def _name_conflict(i: int, distinct: list[frozenset[str]], got: Quantity, claims: list[int]) -> bool:
    """Whether the answer names `got` as another reference value than wanted[i] (`claims`: the reference values
    whose distinctive words it carries, _claims), or by the opposite of its name."""
    if not got.names:
        return False
    if claims and i not in claims:
        return True
    return any((_OPPOSITES.get(word) in got.names or _other_code(word, got.names)) and word not in got.names
               for word in distinct[i])


_CODE = re.compile(r"([^\W\d_]+)(\d+)")


def _other_code(word: str, names: frozenset[str]) -> bool:
    """"n1" against an answer's "n2": the same letters with another number name another thing (spool, gear, size)."""
    code = _CODE.fullmatch(word)
    return bool(code) and any((other := _CODE.fullmatch(name)) and other.group(1) == code.group(1) for name in names)


def _claims(groups: dict[str, list[int]], distinct: list[frozenset[str]], got: Quantity) -> list[int]:
    group = groups.get(_kind(got.family), [])
    return [k for k in group if distinct[k] & got.names] if len(group) > 1 and got.names else []


def _unpaired_names(wanted: list[Quantity], groups: dict[str, list[int]], distinct: list[frozenset[str]],
                    given: list[Quantity], assigned: dict[int, int]) -> list[str]:
    """Values the reference names apart that the answer states under names none of the reference's are (another
    language, other words): paired by order, so values in another order fail."""
    problems = []
    for group in groups.values():
        if len(group) < 2 or not all(distinct[i] and i in assigned for i in group):
            continue
        if any(distinct[k] & given[assigned[i]].names for k in group for i in group):
            continue  # the answer's words pair its values: _name_conflict has judged them
        order = [assigned[i] for i in group]
        if order != sorted(order):
            problems.append("the reference names " + ", ".join(repr(wanted[i].raw) for i in group) + " apart, the "
                            "answer's words for them are none of the reference's, and its values come in another order")
    return problems


def _label(m: re.Match) -> tuple[str, str]:
    group = m.lastgroup
    if group == "size":
        return "size", m.group("size").upper()
    if group in ("stage", "stage_ord"):
        return "stage", str(int(m.group(group)))
    if group in ("stage_word", "stage_after"):
        return "stage", str(_ORDINAL[m.group(group).lower()])
    return _LABEL_KIND[group], group


def extract_quantities(text: str, decimal_comma: bool | None = None, temperature: bool = False,
                       ratio: bool = False) -> list[Quantity]:
    """Every quantity with a recognised unit, in text order, equivalents folded in, roles set.

    `decimal_comma` is the notation to use when the text itself does not say (match() passes the
    reference's); None or False reads "1,200" as thousands (see the module docstring). `temperature`
    says that the text answers a temperature, so a bare "4300 K" is kelvin.
    """
    return _extract(text, decimal_comma, temperature, ratio)[0]


def _extract(text: str, decimal_comma: bool | None = None,
             temperature: bool = False, ratio: bool = False,
             reference_units: frozenset[str] = frozenset(),
             names: bool = True) -> tuple[list[Quantity], bool, bool | None, list[str]]:
    """The quantities, whether the text holds more than MAX_NUMBERS numbers (then only those are read), its notation,
    and the numbers followed by a unit symbol nothing here reads ("15 ㎐" if pint did not know it)."""
    text = _prepare(text[:MAX_TEXT_CHARS])
    notation = _notation(text)
    low = text.lower()
    if len(low) != len(text):  # a few characters lower-case to two ("İ"): keep positions aligned
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    nums = _scan_numbers(text, low, notation if notation is not None else decimal_comma, temperature,
                         borrowed=notation is None and bool(decimal_comma), ratio=ratio)
    too_many = len(nums) > MAX_NUMBERS
    _propagate_units(text, nums)
    grouped = _group(text, nums)
    if len(grouped) > MAX_VALUES:  # a table, or hostile text: not read further (match says so)
        return grouped, too_many, notation, ([], [])
    quantities = _attach(text, low, grouped, names)
    for k, q in enumerate(quantities):
        # "32 oz. (946 mL)": ounces of a liquid. An answer reads a symbol as the reference does: its "500 microns"
        # answer a vacuum in microns of mercury, its "oz" fluid ounces, its temperatures a superheat.
        opening = _OPEN_GAP.match(text, q.end) if q.unit == "ounce" else None
        if opening and k + 1 < len(quantities) and quantities[k + 1].family == "volume" \
                and quantities[k + 1].start == opening.end():
            quantities[k] = _as_unit(q, "fluid_ounce")
        elif _REREAD.get(q.unit) in reference_units:
            quantities[k] = _as_unit(q, _REREAD[q.unit])
        elif q.family == "temperature" and "temperature difference" in reference_units:
            quantities[k] = _as_difference(q)
        elif q.unit == "degree" and "temperatures only" in reference_units:
            # "opens at 82 degrees" answering "82 °C": degrees of temperature, Celsius or Fahrenheit
            low_, high_, _ = q.readings[0]
            quantities[k] = _updated(q, unit="degree_Celsius", units=("degree_Celsius", "degree_Fahrenheit"),
                                     family="temperature", value=low_, high=high_)
    unread: list[str] = []  # numbers with a unit-like token nothing reads ("15 Ж", "46 cSt", "58 HRC"), bare decimals
    bare: list[tuple[int, float]] = []  # other numbers without a unit: (position, value)
    starts = [q.start for q in quantities]
    for num in nums:
        if num.unit_index is not None or num.identifier:
            continue
        n = bisect.bisect_right(starts, num.start) - 1
        if n >= 0 and num.start < quantities[n].end:
            continue  # a tolerance's part or a range's end, inside its quantity
        token = _UNREAD_UNIT.match(text, num.end) or _UNREAD_ASCII.match(text, num.end)
        if token and (token.re is _UNREAD_UNIT or _unit_like(token.group("word"))):
            unread.append(text[num.start:token.end()])
        else:
            if _DECIMAL.fullmatch(text, num.start, num.end) and not (num.start and text[num.start - 1] in "/:"):
                unread.append(text[num.start:num.end])  # "Lambda 1.00 ± 0.03": a value with no unit, not graded
            bare.append((num.start, num.readings[0][0]))
    return _fold_equivalents(text, quantities), too_many, notation, (unread, bare)


# Comparing the reference with the answer.


def _ends(reading: tuple[float, float | None]) -> tuple[float, float]:
    return reading[0], reading[0] if reading[1] is None else reading[1]


_EPS = 1e-9  # relative: float noise of a conversion, not a tolerance


def _value_close(a: float, unit_a: str, prec_a: float, b: float, unit_b: str, prec_b: float, equivalent: bool) -> bool:
    """Whether answer value b states reference value a (or, `equivalent`, whether b restates a at all)."""
    if unit_a == unit_b:
        return math.isclose(a, b, rel_tol=_EPS, abs_tol=1e-12)
    if not _convertible(unit_a, unit_b):
        return False
    a_in_b = convert(a, unit_a, unit_b)
    b_in_a = convert(b, unit_b, unit_a)
    scale, offset = _affine(unit_a, unit_b)
    if equivalent:
        # The main value as printed, converted and rounded to the equivalent's digits ("45 Nm (33 ft-lb)"; not
        # "45 Nm (34 ft-lb)", "90 °C (196 °F)"). A manual's own looser pair is accepted where it prints it.
        return abs(a_in_b - b) <= prec_b * (1 + _EPS) + _EPS * abs(b) or abs(b_in_a - a) <= prec_a * (1 + _EPS) + _EPS * abs(a)
    # The answer is the reference rounded to the answer's digits, and no coarser than a rounding can excuse
    # ("81 ft-lb" for 110 Nm; not "0.01 in" for 0.15 mm, "1 bar" for 19 psi, "2 in" for 48 mm) ...
    if abs(a_in_b - b) <= prec_b * (1 + _EPS) + _EPS * abs(b):
        return offset != 0 or abs(a_in_b - b) <= COARSE_REL * abs(a_in_b) + _EPS
    # ... or more precise than a coarsely printed reference, and close to it.
    return abs(b_in_a - a) <= prec_a * (1 + _EPS) and abs(b_in_a - a) <= MORE_PRECISE_REL * abs(a)


def _agree(a: Quantity, b: Quantity, equivalent: bool = False) -> bool:
    """Whether b states a's value(s): every end agrees, for some reading of the numbers and of the units."""
    if not compatible(a.family, b.family):
        return False
    for unit_a in a.units:
        for unit_b in b.units:
            for ra in a.readings:
                for rb in b.readings:
                    if (ra[1] is None) != (rb[1] is None):
                        continue
                    if all(_value_close(x, unit_a, ra[2], y, unit_b, rb[2], equivalent)
                           for x, y in zip(_ends(ra), _ends(rb))):
                        return True
    return False


def _inside(want: Quantity, got: Quantity) -> bool:
    if want.family != got.family or want.high is None or got.high is not None:
        return False
    return want.value - 1e-9 <= got.value <= want.high + 1e-9


def consistent_equivalent(head: Quantity, equivalent: Quantity) -> bool:
    """Whether `equivalent` restates `head` within the rounding their printed digits allow."""
    return _agree(head, equivalent, equivalent=True)



def _describe(q: Quantity) -> str:
    gap = "" if q.family == "angle" else " "
    span = f"{q.value:.4g}" if q.high is None else f"{q.value:.4g}–{q.high:.4g}"
    if q.family in UNIT_SYMBOL:
        return f"{span}{gap}{UNIT_SYMBOL[q.family]}"
    low, high, _ = q.readings[0]  # a family without a canonical symbol: as printed, in pint's symbol
    span = f"{low:.4g}" if high is None else f"{low:.4g}–{high:.4g}"
    return f"{span} {_symbol(q.family, q.unit)}"


def _group_of(family: str) -> str:
    return "sequence" if family in SEQUENCE_FAMILIES else family


def _label_conflict(want: Quantity, got: Quantity) -> bool:
    mine = dict(want.labels)
    return any(kind in mine and mine[kind] != value for kind, value in got.labels)


def _condition_agrees(a: Condition, b: Condition) -> bool:
    if a.dimension != b.dimension and not (a.quantity and b.quantity and compatible(a.dimension, b.dimension)):
        return False
    if a.dimension == "selector" and a.word and b.word:  # "in P or N" agrees with "in N", not with "in D"
        return bool(set(a.word.split("/")) & set(b.word.split("/")))
    if a.word or b.word:
        return a.word == b.word
    return _agree(a.quantity, b.quantity)


def _condition_problems(wanted: tuple[Condition, ...], given: tuple[Condition, ...]) -> list[str]:
    given = tuple({(g.dimension, g.word, g.raw.lower()): g for g in given}.values())  # each distinct condition once
    problems = []
    for w in wanted:
        if w.word and any(v.quantity and v.dimension == w.dimension and any(_condition_agrees(v, g) for g in given)
                          for v in wanted):
            continue  # "at 20 °C (cold)" answered "at 20 °C": the stated temperature says it
        if not any(_condition_agrees(w, g) for g in given):
            rival = next((g for g in given if g.dimension == w.dimension), None)
            if rival is None and (w.heading or w.dimension.startswith("with ")):
                # "with filter" unsaid is no contradiction ("without filter" is), nor a heading's condition
                # unsaid ("CO at idle: 0.5 % or less" answered "no more than 0.5 %")
                continue
            problems.append(f"condition {w.raw!r} " + (f"differs: answer says {rival.raw!r}" if rival else "is missing"))
    said = {p.rsplit("answer says ", 1)[-1] for p in problems}
    for g in given:
        if g.quantity and any(w.word and w.dimension == g.dimension and any(_condition_agrees(w, x) for x in given)
                              for w in wanted):
            continue  # "at idle (800 rpm)": the idle speed stated beside the agreed "idle"
        if any(w.dimension == g.dimension for w in wanted) and not any(_condition_agrees(w, g) for w in wanted):
            if repr(g.raw) not in said:
                said.add(repr(g.raw))
                problems.append(f"condition {g.raw!r} contradicts the reference")
    return problems


def _fail(applicable: bool, reason: str) -> SpecMatch:
    return SpecMatch(False, applicable, 0.0, [reason], (), (), True)


def match(expected: str, actual: str, page_text: str | None = None) -> SpecMatch:
    """Check that `actual` states the specifications of `expected`, and no others (rules: module docstring).

    `page_text`: the page's own text when the row carries it; a value the answer adds that the page states is
    evidence, not a hallucination.
    """
    expected, actual = expected if isinstance(expected, str) else "", actual if isinstance(actual, str) else ""
    if len(expected) > MAX_TEXT_CHARS:
        return _fail(False, f"not applicable: the reference is {len(expected):,} characters, over the "
                            f"{MAX_TEXT_CHARS:,} the spec check reads")
    every, too_many, reference_notation, (unread, _) = _extract(expected)
    if too_many:
        return _fail(False, f"not applicable: the reference holds more than {MAX_NUMBERS} numbers")
    if unread:
        # Never a verdict on the readable rest: "15–17 ㎐ at 20 °C" checked on "20 °C" alone would pass any value.
        return _fail(False, "not applicable: the reference states " + ", ".join(repr(u) for u in unread[:3])
                     + " in a unit the spec check does not read")
    wanted = [q for q in every if q.role == "spec"]
    if len(every) > MAX_VALUES:
        return _fail(False, f"not applicable: the reference states {len(every)} values, more than the {MAX_VALUES} "
                            f"the spec check pairs (a table, not a specification)")
    if not wanted:
        why = ("only incidental sizes or conditions" if every else "no quantity with a unit the checker reads")
        return _fail(False, f"not applicable: the reference states {why}")
    if len(actual) > MAX_TEXT_CHARS:
        return _fail(True, f"answer is {len(actual):,} characters, over the {MAX_TEXT_CHARS:,} the spec check "
                           f"reads: not graded as correct")
    # An answer read in the reference's light: its decimal notation where the answer does not say, a bare K as
    # kelvin where the reference states a temperature.
    # A reference that states only temperature differences (a superheat) makes the answer's temperatures ones too.
    reference_units = frozenset(q.unit for w in wanted for q in (w, *w.equivalents)) | (
        {"temperature difference"} if any(w.family == "temperature difference" for w in wanted)
        and not any(w.family == "temperature" for w in every) else set()) | (
        {"temperatures only"} if any(w.family == "temperature" for w in every)
        and not any(w.family == "angle" for w in every) else set())
    groups = _kinds(wanted)
    distinct = _distinct_names(wanted, groups)
    # The answer's names matter only where the reference names values apart or by a word with an opposite.
    named = any(len(group) > 1 and all(distinct[i] for i in group) for group in groups.values()) or any(
        word in _OPPOSITES or _CODE.fullmatch(word) for words in distinct for word in words)
    found, too_many, _, (_, bare) = _extract(actual, reference_notation,
                                             any(q.family in ("temperature", "temperature difference") for q in wanted),
                                     any(q.family == "ratio" for q in wanted), reference_units,
                                     names=named or bool(page_text))
    # The page's own text, when the row carries it, is evidence for a value the answer adds (read up to MAX_TEXT_CHARS).
    page = _extract(page_text, reference_notation)[0] if isinstance(page_text, str) and page_text.strip() else []
    if too_many:
        return _fail(True, f"answer holds more than {MAX_NUMBERS} numbers: not graded as correct")

    # Spec values of the answer; incidental sizes follow, matched only where they state an expected value.
    given = [q for q in found if q.role == "spec"] + [q for q in found if q.role == "incidental"]
    if len(found) > MAX_VALUES:
        return _fail(True, f"answer states {len(found)} values, more than the {MAX_VALUES} the spec check pairs: "
                           f"not graded as correct")

    prepared = _prepare(actual[:MAX_TEXT_CHARS])
    sequence_words = [m.start() for m in _SEQUENCE_WORDS.finditer(prepared)]  # found once, looked up by bisection

    details: list[str] = []
    problems = 0
    for g in (q for q in given if q.role == "spec"):
        for e in g.equivalents:
            if not consistent_equivalent(g, e) and not _printed_pair(wanted, g, e):
                problems += 1
                details.append(f"equivalent {e.raw!r} ({_describe(e)}) disagrees with its own main value "
                               f"{_describe(g)} in {g.raw!r}")
        if g.hedge:
            problems += 1
            details.append(f"hedge: {g.raw!r} or {g.hedge!r} states no single value")

    ref_conditions = {tuple(sorted(c.raw.lower() for c in w.conditions)) for w in wanted if w.conditions}
    global_conditions = len(ref_conditions) <= 1
    if global_conditions and ref_conditions:
        wanted_conditions = next(w.conditions for w in wanted if w.conditions)
        all_given = tuple(c for g in given for c in g.conditions)
        for problem in _condition_problems(wanted_conditions, all_given):
            problems += 1
            details.append(problem)

    claims = [_claims(groups, distinct, g) for g in given]
    assigned: dict[int, int] = {}
    used: set[int] = set()
    cursor: dict[str, int] = {}
    out_of_order: set[int] = set()
    positional: set[int] = set()
    for i, want in enumerate(wanted):
        pool = [j for j, g in enumerate(given) if j not in used and g.role == "spec" and compatible(g.family, want.family)
                and not _label_conflict(want, g) and not _name_conflict(i, distinct, g, claims[j])]
        strong = [j for j in pool if want.labels and set(want.labels) <= set(given[j].labels)]
        if strong:
            pool = strong
        grp = _group_of(want.family)
        start = cursor.get(grp, -1)
        choice = next((j for j in pool if j > start and _agrees_with(want, given[j])), None)
        if choice is None:
            choice = next((j for j in pool if _agrees_with(want, given[j])), None)
            if choice is not None and not strong and not want.labels and grp == "sequence":
                out_of_order.add(i)
        if choice is None:
            # "a 16-meter hose" states the hose length the reference asks for, in the form of a size.
            choice = next((j for j, g in enumerate(given) if j not in used and g.role == "incidental"
                           and compatible(g.family, want.family) and _agrees_with(want, g)), None)
        if choice is None:
            continue
        assigned[i] = choice
        used.add(choice)
        if not strong:
            positional.add(i)
            cursor[grp] = max(cursor.get(grp, -1), choice)

    missing: list[Quantity] = []
    good = 0
    for i, want in enumerate(wanted):
        label = f"expected {want.raw!r}" + (f" ({_labels_text(want)})" if want.labels else "")
        if i in assigned:
            got = given[assigned[i]]
            notes = []
            if i in out_of_order:
                notes.append("out of order")
            if not _qualifiers_agree(want, got):
                notes.append(f"qualifier differs: reference {want.qualifier or 'none'}, answer {got.qualifier or 'none'}")
            if not global_conditions:
                notes.extend(_condition_problems(want.conditions, got.conditions))
            if notes:
                problems += 1
                details.append(f"{label}: value matched {got.raw!r} but " + "; ".join(notes))
            else:
                good += 1
                details.append(f"{label}: matched {got.raw!r}")
            continue
        missing.append(want)
        pool = [j for j, g in enumerate(given) if j not in used and g.role == "spec" and compatible(g.family, want.family)]
        inside = next((j for j in pool if _inside(want, given[j])), None)
        if inside is not None:
            used.add(inside)
            details.append(f"{label}: only the single value {given[inside].raw!r} inside the range; the range is required")
            continue
        labelled = [j for j in pool if want.labels and set(want.labels) <= set(given[j].labels)]
        rivals = labelled or [j for j in pool if not _label_conflict(want, given[j])] or pool
        if rivals:
            nearest = labelled[0] if labelled else min(rivals, key=lambda j: abs(given[j].value - want.value))
            used.add(nearest)
            details.append(f"{label}: wrong value, answer says {given[nearest].raw!r} "
                           f"({_describe(given[nearest])} vs {_describe(want)})")
        else:
            details.append(f"{label}: missing")

    hallucinated: list[Quantity] = []
    comparisons = 0
    for j, got in enumerate(given):
        if j in used or got.role != "spec":
            continue
        twin = next((i for i in assigned if _agrees_with(wanted[i], got)), None)
        if got.family == "distance" and all(w.family != "distance" for w in wanted):
            details.append(f"not judged: {got.raw!r}, a distance where the reference states none")
            continue
        if twin is not None and sum(1 for w in wanted if _group_of(w.family) == _group_of(got.family)) == 1 \
                and not _between(sequence_words, min(got.start, given[assigned[twin]].end),
                                 max(got.end, given[assigned[twin]].end) + SEQUENCE_AFTER):
            details.append(f"repeated: {got.raw!r}")
            continue
        stated = None
        for p in page:
            if comparisons >= PAGE_COMPARISONS:
                details.append(f"not excused by the page: {got.raw!r} (the page check stops after {PAGE_COMPARISONS:,} comparisons)")
                break
            comparisons += 1
            if compatible(p.family, got.family) and _agrees_with(p, got) and not (p.names and got.names and not p.names & got.names):
                stated = p  # the page states it, under the same name where both name it
                break
        if stated is not None:
            details.append(f"not judged: {got.raw!r} is stated on the page ({stated.raw!r} in its text)")
            continue
        hallucinated.append(got)
        details.append(f"hallucinated: {got.raw!r} ({_describe(got)}) is not a value the reference gives")

    for problem in _unpaired_names(wanted, groups, distinct, given, assigned):
        problems += 1
        details.append(problem)
    for problem in _unitless_values(prepared, given, bare, sequence_words):
        problems += 1
        details.append(problem)
    order = [assigned[i] for i in sorted(assigned) if i in positional and _group_of(wanted[i].family) == "sequence"]
    order_ok = not out_of_order and all(a < b for a, b in zip(order, order[1:]))
    passed = good == len(wanted) and order_ok and not hallucinated and not problems
    return SpecMatch(passed, True, good / len(wanted), details, tuple(missing), tuple(hallucinated), order_ok)


def _agrees_with(want: Quantity, got: Quantity) -> bool:
    """The answer's main value states the reference's value, or an equivalent the reference prints: the manual's
    own "6,000 km (4,000 mi)" makes "4,000 miles" right even though 6,000 km is 3,728 miles."""
    return _agree(want, got) or any(_agree(e, got) for e in want.equivalents)


# A limit is a maximum for what grows with wear (runout, play, clearance) and a minimum for what wears away.
_LIMIT_MAX_NAMES = frozenset("runout play clearance backlash endplay float warpage warp ovality taper bend deflection "
                             "stretch lash gap bore cylinder guide chain elongation spiel schlag ovalisation voile "
                             "jeu faux-rond 振れ すき間 隙間".split())
_LIMIT_MIN_NAMES = frozenset("thickness depth height free lining pad tread disc disk rotor shoe plate stem journal pin "
                             "dicke stärke stärk belag scheibe épaisseur garniture disque 厚さ 厚み".split())


def _qualifiers_agree(want: Quantity, got: Quantity) -> bool:
    """The same qualifier; a limit agrees with the min or max its name implies (either, when it does not say);
    a qualifier that is part of a name ("Max. torque") need not be said, but its opposite must not be."""
    a, b = want.qualifier, got.qualifier
    if a == b:
        return True
    soft = bool(a and a.startswith("named ")) or bool(b and b.startswith("named "))
    a, b = (a or "").removeprefix("named "), (b or "").removeprefix("named ")
    if soft:
        return not ({a, b} == {"min", "max"})
    if a == b:
        return True
    if a and b and "limit" in (a, b):
        direction = _limit_direction(want) if a == "limit" else None
        return direction in (None, b) if a == "limit" else True
    return False


def _limit_direction(want: Quantity) -> str | None:
    """"max" or "min" for a reference's "limit" whose name says which ("runout limit", "pad thickness limit")."""
    if want.qualifier != "limit":
        return None
    long = [name for name in want.names if len(name) >= 8 or not name.isascii()]  # "Bremsscheibe", "ディスク厚さ"
    grows = bool(want.names & _LIMIT_MAX_NAMES) or any(w in name for name in long for w in _LIMIT_MAX_NAMES if len(w) >= 4 or not w.isascii())
    wears = bool(want.names & _LIMIT_MIN_NAMES) or any(w in name for name in long for w in _LIMIT_MIN_NAMES if len(w) >= 4 or not w.isascii())
    return "max" if grows and not wears else "min" if wears and not grows else None


SEQUENCE_AFTER = 20  # characters after a repeated value where "once more", "again" make it a further stage
UNITLESS_REACH = 80  # characters after a value within which a number without a unit is read as another of its kind
UNITLESS_FACTOR = 3.0  # ... when it is within this factor of that value ("40 Nm, or 45 if reused")


def _unitless_values(text: str, given: list[Quantity], bare: list[tuple[int, float]],
                     sequence_words: list[int] = ()) -> list[str]:
    """An answer's numbers without a unit just after a value of similar size, in its sentence: another value of
    that kind the answer slips in ("40 Nm, or 45 if reused", "0.20 mm (0.25 on high-mileage engines)")."""
    specs = sorted((g for g in given if g.role == "spec"), key=lambda g: g.start)
    if not specs or not bare:
        return []
    starts = [g.start for g in specs]
    sentence_ends = [m.start() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    problems = []
    for position, value in bare:
        n = bisect.bisect_right(starts, position) - 1
        if n < 0 or specs[n].end > position or position - specs[n].end > UNITLESS_REACH \
                or bisect.bisect_left(sentence_ends, specs[n].start) != bisect.bisect_left(sentence_ends, position):
            continue
        near = specs[n]
        own = [end for low, high, _ in near.readings for end in (low, high) if end is not None]
        same = any(math.isclose(value, end, rel_tol=1e-9) for end in own)
        if same and near.family in SEQUENCE_FAMILIES and _between(sequence_words, near.end, position):
            problems.append(f"unitless value {value:g} after {near.raw!r} is a further stage the reference does not give")
            continue
        if same or value <= 0 \
                or not any(end > 0 and end / UNITLESS_FACTOR <= value <= end * UNITLESS_FACTOR for end in own):
            continue
        problems.append(f"unitless value {value:g} after {near.raw!r} reads as another {near.family} the reference "
                        f"does not give")
    return problems


def _between(positions: list[int], start: int, end: int) -> bool:
    """Whether a sorted position lies in [start, end)."""
    n = bisect.bisect_left(positions, start)
    return n < len(positions) and positions[n] < end


def _printed_pair(wanted: list[Quantity], head: Quantity, equivalent: Quantity) -> bool:
    """Whether the answer's "head (equivalent)" is a pair the reference itself prints."""
    return any(_agrees_with(w, head) and _agrees_with(w, equivalent) for w in wanted)


def _labels_text(q: Quantity) -> str:
    return ", ".join(f"stage {v}" if kind == "stage" else v for kind, v in q.labels)


