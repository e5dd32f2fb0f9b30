"""weak_pages.html: the weak pages of weak_pages.jsonl to read, with hostile text from the data escaped and shown."""

from __future__ import annotations

import json
import re

from harness.weak import write_weak_pages

HOSTILE_PAGE = 'p1<script>alert(1)</script>"onerror=x\u202egpj.exe'
HOSTILE_QUESTION = 'Torque for <script>evil()</script> "onerror=alert(2) bolts\u202e?'


def scored(sample_id: str, *, passed: bool | None, page: str, question: str = "q?", section: str = "S1", error: str | None = None) -> dict:
    return {"id": sample_id, "kind": "val", "section": section, "page": page, "image_ref": f"images/{page}.jpg", "image": None,
            "question": question, "expected": "30 Nm", "answer": None if error else "35 Nm", "error": error,
            "passed": None if error else passed,
            "checks": {"spec": {"applicable": True, "passed": bool(passed), "score": 1.0 if passed else 0.0,
                                "details": ["expected 30 Nm: found 35 Nm <b>"]}, "keywords": None, "token_f1": 0.5}}


def test_weak_pages_html_escapes_hostile_names_and_shows_the_jsonl_numbers(tmp_path):
    records = [scored("a1", passed=False, page=HOSTILE_PAGE, question=HOSTILE_QUESTION),
               scored("a2", passed=True, page="p2"),
               scored("b1", passed=False, page="p3", section="S2 <img src=x onerror=y>"),
               scored("b2", passed=None, page="p3", section="S2 <img src=x onerror=y>", error="HTTP 500")]
    report, path = write_weak_pages(tmp_path, records)
    html = (tmp_path / "weak_pages.html").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["page"] for r in rows] == [HOSTILE_PAGE, "p3"]

    # Hostile text is escaped (no markup of its own) and the bidi override is shown, visibly, as its escape.
    assert "<script>" not in html and "<img" not in html and '"onerror' not in html and "\u202e" not in html
    assert "&lt;script&gt;evil()&lt;/script&gt; &quot;onerror=alert(2) bolts\\u202e?" in html
    assert "page p1&lt;script&gt;alert(1)&lt;/script&gt;&quot;onerror=x\\u202egpj.exe" in html
    assert "S2 &lt;img src=x onerror=y&gt;" in html and "found 35 Nm &lt;b&gt;" in html

    # The numbers are the JSON's: each page's failed of n, its errors and failing ids; each section's counts.
    for number, row in enumerate(rows, 1):
        card = re.search(rf'<article class="weak-page" id="page-{number}">(.*?)</article>', html, re.S).group(1)
        assert f"<dd>{row['failed']} of {row['n']} failed</dd>" in card
        assert f"<dt>without an answer</dt><dd>{row['errors']}</dd>" in card
        assert f"<dd>{', '.join(row['failing_ids'])}</dd>" in card
    assert (rows[1]["failed"], rows[1]["n"], rows[1]["errors"]) == (1, 2, 1)
    for section in report.sections:
        assert (f'<td class="num">{section.failed}</td><td class="num">{section.n}</td>'
                f'<td class="num">{section.errors}</td>') in html
    assert f"{report.failed} failed of {report.samples} samples on 2 page(s)" in html


def test_weak_pages_html_without_failures_says_so(tmp_path):
    write_weak_pages(tmp_path, [scored("a1", passed=True, page="p1")])
    html = (tmp_path / "weak_pages.html").read_text(encoding="utf-8")
    assert "No page has a failure." in html and "0 failed of 1 samples" in html
