"""The evaluation harness: generation against any OpenAI-compatible endpoint, spec checks, the judge, reports.

Usage:
    from harness.specs import match               # match("40 Nm", "30 ft-lb").passed
    from harness.keywords import keyword_recall   # keyword_recall(["3"], "three squares").passed
"""
