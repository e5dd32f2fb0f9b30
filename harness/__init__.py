"""The evaluation harness: generation against any OpenAI-compatible endpoint, spec checks, the judge, reports.

Usage:
    from harness.specs import match    # match("40 Nm", "30 ft-lb").passed
"""
