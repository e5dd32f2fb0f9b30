"""The judge's metrics: DeepEval's AnswerRelevancy, Faithfulness, GEval "Correctness" and Hallucination,
and a single-call rubric grader, all talking to the judge through JudgeClient (cache, retries, counts).

Usage:
    case = JudgeCase.from_sample(sample, answer)
    test_case = to_test_case(case, [page_image(p) for p in case.images] if client.sees_images else None)
    metric = make_metric("faithfulness", threshold=0.7, client=client)
    await metric.a_measure(test_case, _show_indicator=False)   # JudgeUnscored when the judge gave no usable answer

What the judge reads for one sample:
    input            the question (text: relevance to the question needs no page image)
    actual_output    the model's answer
    expected_output  the reference answer; for a keyword probe, "The answer should cover: k1, k2, ..."
    retrieval_context (Faithfulness, rubric) and context (Hallucination), in this order:
        1. the reference answer (or the keywords), labelled as taken from the manual
        2. the page text, when the pipeline provides it (metadata.page_text of a validation row)
        3. the page images, every page of the sample in order (none for a text-only sample), when the judge
           can see images (Claude: yes; an OpenAI-compatible judge: no, unless JudgeSettings.images is set)
    The reference comes first because it is the only ground truth every sample has; the page adds what
    the reference leaves out, so a correct detail beyond the reference is not counted as made up.

Judge calls per sample, measured (bench/bench_judge.py): AnswerRelevancy 3, Faithfulness 4, Correctness 1
(fixed evaluation_steps: none regenerated), Hallucination 2, rubric 1.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from harness.judge_client import DEFAULT_DOCUMENT, ImagePart, JudgeClient, JudgeRequest, JudgeUnscored
from data_adapters.samples import sample_pages

METRIC_NAMES = ("answer_relevancy", "faithfulness", "correctness", "hallucination", "rubric")
# The document is named in the metrics' prompts from the recipe's eval.document (JudgeSettings.document):
# nothing here assumes which manual, product or machine the pages come from.
REFERENCE_LABEL = "Reference answer taken from the document:"
KEYWORDS_LABEL = "The document's answer covers:"
PAGE_TEXT_LABEL = "Text of the document page:"
PAGE_IMAGE_LABEL = "Image of the document page:"
PAGE_IMAGES_LABEL = "Images of the document pages, in order:"  # a sample that shows several pages
RUBRIC_VERSION = 2  # bump when RUBRIC_INSTRUCTIONS change meaning (it is in the cache key either way)
# DeepEval image id -> the image as sent. Ids are per test case, parts are per page (shared objects), so
# this grows by one small entry per sample, not by one image.
_IMAGE_PARTS: dict[str, ImagePart] = {}

CORRECTNESS_CRITERIA = (
    "Determine whether the actual output is correct information from {document} for the input question, "
    "judged against the expected output taken from that document: specification values (torque, "
    "tightening stages and angles, clearances, capacities, pressures), their units and the steps of a "
    "procedure must agree with the expected output. A paraphrase or extra correct detail is fine; a wrong "
    "or missing value, unit, stage or safety-relevant step is not."
)
# Fixed so GEval does not generate (and pay for) new steps for every case, and so scores are reproducible.
CORRECTNESS_STEPS = (
    "Read the input question and the expected output; list the values, units, stages and steps the expected output states.",
    "Check that the actual output answers the question that was asked, not a different component or procedure.",
    "Compare every value, unit, tightening stage and angle in the actual output with the expected output; any contradiction is a serious error.",
    "For a procedure, check that the actual output contains the steps the expected output requires, in a workable order; missing safety-relevant steps are serious errors.",
    "Do not penalise paraphrase, formatting or extra correct detail; penalise invented specifications heavily.",
)

RUBRIC_INSTRUCTIONS = """\
You grade an answer to a question about the pages of a document.
The document: {document}.
Grade only against the reference answer and the pages (their text and images when given), not against
outside knowledge of the subject.

Score two things from 0 to 10:
- correctness: does the answer give the facts the reference gives for this question? A paraphrase is
  fine. A missing or wrong value, unit, tightening stage or required step lowers the score; an answer
  to a different question scores 0.
- spec_faithfulness: is every specification in the answer (numbers, units, stages, angles, clearances,
  capacities, pressures, part names) supported by the reference or the page? 10 when all are; 0 when one
  contradicts them. An answer that states no specification scores 10 here.
List in `unsupported` each statement of the answer that neither the reference nor the page supports.
Give `reason` in one or two sentences.
Reply with JSON only: {"correctness": <0-10>, "spec_faithfulness": <0-10>, "unsupported": [<string>], "reason": <string>}
"""


class RubricVerdict(BaseModel):
    correctness: int = Field(ge=0, le=10, description="0-10: the answer gives the reference's facts")
    spec_faithfulness: int = Field(ge=0, le=10, description="0-10: every stated spec is supported by the reference or page")
    unsupported: list[str] = Field(description="statements of the answer that nothing supports")
    reason: str


@dataclass(frozen=True)
class JudgeCase:
    """One answered sample, as the judge sees it."""

    id: str
    question: str
    answer: str
    reference: str | None = None
    keywords: tuple[str, ...] | None = None
    page_text: str | None = None
    image: str | None = None  # path of the first page image
    kind: str | None = None
    category: str | None = None
    content_type: str | None = None
    images: tuple[str, ...] = ()  # every page of the sample, in order; () for a text-only sample

    @classmethod
    def from_sample(cls, sample: dict, answer: str) -> "JudgeCase":
        keywords = sample.get("expected_keywords")
        pages = tuple(path for path, _ in sample_pages(sample) if path)
        return cls(
            id=str(sample["id"]), question=sample["question"], answer=answer, reference=sample.get("expected"),
            keywords=tuple(keywords) if keywords else None, page_text=sample.get("page_text"), image=pages[0] if pages else None,
            kind=sample.get("kind"), category=sample.get("category"), content_type=sample.get("content_type"), images=pages,
        )

    def __post_init__(self) -> None:
        if not self.images and self.image:  # a case made with one page the old way
            object.__setattr__(self, "images", (self.image,))

    @property
    def expected_output(self) -> str:
        if self.reference:
            return self.reference
        return "The answer should cover: " + ", ".join(self.keywords or ())

    def context(self, images: ImagePart | list[ImagePart] | None = None) -> list[str]:
        """retrieval_context / context, in the order the module docstring gives; images as DeepEval placeholders,
        every page in one item, in order (one page reads as it always did)."""
        items = [f"{REFERENCE_LABEL} {self.reference}" if self.reference
                 else f"{KEYWORDS_LABEL} " + ", ".join(self.keywords or ())]
        if self.page_text:
            items.append(f"{PAGE_TEXT_LABEL}\n{self.page_text}")
        images = [images] if isinstance(images, ImagePart) else [i for i in images or [] if i is not None]
        if images:
            from deepeval.test_case import MLLMImage

            placeholders = []
            for image in images:
                placeholder = MLLMImage(dataBase64=image.data_b64, mimeType=image.media_type)  # shares the page's base64 string
                _IMAGE_PARTS[placeholder._id] = image
                placeholders.append(str(placeholder))
            label = PAGE_IMAGE_LABEL if len(images) == 1 else PAGE_IMAGES_LABEL
            items.append(f"{label} {' '.join(placeholders)}")
        return items


def configure_deepeval(files_dir: Path | None = None) -> None:
    """Telemetry off and DeepEval's own files under files_dir, unless the user set otherwise.
    DeepEval reads these when it is first imported: call this before importing it."""
    os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "1")
    if files_dir is not None:
        files_dir = Path(files_dir).resolve()
        os.environ.setdefault("DEEPEVAL_CACHE_FOLDER", str(files_dir))
        os.environ.setdefault("DEEPEVAL_RESULTS_FOLDER", str(files_dir / "results"))
        os.environ.setdefault("DEEPEVAL_HOME", str(files_dir / "home"))


def to_test_case(case: JudgeCase, images: ImagePart | list[ImagePart] | None = None):
    from deepeval.test_case import LLMTestCase

    context = case.context(images)
    return LLMTestCase(
        input=case.question, actual_output=case.answer, expected_output=case.expected_output,
        retrieval_context=context, context=context, name=case.id,
    )


@functools.cache
def _judge_llm_class():
    from deepeval.models import DeepEvalBaseLLM

    class JudgeLLM(DeepEvalBaseLLM):
        """DeepEval's view of the judge: every generate() goes through JudgeClient (cache, retries, counts).
        One instance per metric, so the cache key names the metric and its settings."""

        def __init__(self, client: JudgeClient, metric: str, settings: dict):
            self.client, self.metric, self.metric_settings = client, metric, settings
            super().__init__(client.settings.model)

        def load_model(self, *args, **kwargs):
            return self

        def get_model_name(self, *args, **kwargs) -> str:
            return self.client.settings.model

        def supports_multimodal(self) -> bool:
            return self.client.sees_images

        def supports_structured_outputs(self) -> bool:
            return True

        def request(self, prompt: Any, schema: type[BaseModel] | None) -> JudgeRequest:
            return JudgeRequest(self.metric, self.metric_settings, prompt_parts(prompt), schema)

        def generate(self, prompt: Any, schema: type[BaseModel] | None = None):
            return self.client.ask(self.request(prompt, schema))[0]

        async def a_generate(self, prompt: Any, schema: type[BaseModel] | None = None):
            return (await self.client.a_ask(self.request(prompt, schema)))[0]

    return JudgeLLM


def prompt_parts(prompt: Any) -> tuple:
    """A DeepEval prompt as text and images in order; placeholders `[DEEPEVAL:IMAGE:<random id>]` become
    the images themselves, so the cache key holds the image's hash, not a per-run random id."""
    from deepeval.models.llms.multimodal import multimodal_parts
    from deepeval.test_case import MLLMImage

    parts = multimodal_parts(prompt) if isinstance(prompt, str) else None
    if parts is None:
        return (str(prompt),)
    out: list = []
    for part in parts:
        if isinstance(part, MLLMImage):
            if part._id not in _IMAGE_PARTS:
                part.ensure_images_loaded()
                data = base64.b64decode(part.dataBase64)
                image = ImagePart.from_bytes(data, part.mimeType)
                _IMAGE_PARTS[part._id] = image
            out.append(_IMAGE_PARTS[part._id])
        elif part:
            out.append(str(part))
    return tuple(out)


def correctness_criteria(document: str = DEFAULT_DOCUMENT) -> str:
    return CORRECTNESS_CRITERIA.replace("{document}", document)


def rubric_instructions(document: str = DEFAULT_DOCUMENT) -> str:
    return RUBRIC_INSTRUCTIONS.replace("{document}", document)  # the reply format holds JSON braces: no str.format


def metric_settings(name: str, document: str = DEFAULT_DOCUMENT) -> dict:
    """What shapes a metric's prompts besides its inputs: part of every cache key."""
    if name == "correctness":
        return {"class": "GEval", "name": "Correctness", "criteria": correctness_criteria(document), "steps": list(CORRECTNESS_STEPS),
                "params": ["input", "actual_output", "expected_output"]}
    if name == "rubric":
        return {"class": "RubricMetric", "version": RUBRIC_VERSION,
                "instructions": hashlib.sha256(rubric_instructions(document).encode()).hexdigest()}
    return {"class": {"answer_relevancy": "AnswerRelevancyMetric", "faithfulness": "FaithfulnessMetric",
                      "hallucination": "HallucinationMetric"}[name], "include_reason": True}


def make_metric(name: str, threshold: float, client: JudgeClient):
    """A fresh metric object (DeepEval metrics keep per-case state) judged through `client`."""
    if name == "rubric":
        return _rubric_metric_class()(threshold=threshold, client=client)
    from deepeval.metrics import AnswerRelevancyMetric, FaithfulnessMetric, GEval, HallucinationMetric
    from deepeval.test_case import SingleTurnParams

    document = client.settings.document
    model = _judge_llm_class()(client, name, metric_settings(name, document))
    common = dict(threshold=threshold, model=model, include_reason=True, async_mode=True)
    if name == "answer_relevancy":
        return AnswerRelevancyMetric(**common, eval_mode="llm")
    if name == "faithfulness":
        return FaithfulnessMetric(**common, eval_mode="llm")
    if name == "hallucination":
        # DeepEval 4.x scores hallucination like every other metric: 1 = no context contradicted, pass at >= threshold.
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return HallucinationMetric(**common, eval_mode="llm")
    if name == "correctness":
        return GEval(
            name="Correctness", criteria=correctness_criteria(document), evaluation_steps=list(CORRECTNESS_STEPS),
            evaluation_params=[SingleTurnParams.INPUT, SingleTurnParams.ACTUAL_OUTPUT, SingleTurnParams.EXPECTED_OUTPUT],
            threshold=threshold, model=model, async_mode=True,
        )
    raise ValueError(f"unknown judge metric {name!r}; choose from {', '.join(METRIC_NAMES)}")


def rubric_request(test_case, document: str = DEFAULT_DOCUMENT) -> JudgeRequest:
    """The rubric's single request for a DeepEval test case: the page images first, in order (Claude reads an image
    best before the text about it), then the instructions, question, reference, page text and answer."""
    images: list[ImagePart] = []
    page_texts: list[str] = []
    for item in test_case.retrieval_context or []:
        images += [part for part in prompt_parts(item) if isinstance(part, ImagePart)]
        if item.startswith(PAGE_TEXT_LABEL):
            page_texts.append(item)
    text = "\n\n".join([
        rubric_instructions(document),
        f"Question:\n{test_case.input}",
        f"Reference:\n{test_case.expected_output}",
        *page_texts,
        f"Answer to grade:\n{test_case.actual_output}",
    ])
    return JudgeRequest("rubric", metric_settings("rubric", document), (*images, text), RubricVerdict)


def rubric_score(verdict: RubricVerdict) -> float:
    """Both must hold for a service answer: the lower of the two, on 0-1."""
    return min(verdict.correctness, verdict.spec_faithfulness) / 10


@functools.cache
def _rubric_metric_class():
    from deepeval.metrics import BaseMetric
    from deepeval.test_case import SingleTurnParams

    class RubricMetric(BaseMetric):
        """Correctness and spec faithfulness in one structured judge call (batchable at half price)."""

        _required_params = [SingleTurnParams.INPUT, SingleTurnParams.ACTUAL_OUTPUT, SingleTurnParams.EXPECTED_OUTPUT]

        def __init__(self, threshold: float, client: JudgeClient):
            self.threshold, self.client = threshold, client
            self.evaluation_model = client.settings.model
            self.include_reason, self.async_mode, self.strict_mode = True, True, False
            self.details: dict | None = None

        def measure(self, test_case, *args, **kwargs) -> float:
            verdict, _ = self.client.ask(rubric_request(test_case, self.client.settings.document))
            return self._record(verdict)

        async def a_measure(self, test_case, *args, **kwargs) -> float:
            verdict, _ = await self.client.a_ask(rubric_request(test_case, self.client.settings.document))
            return self._record(verdict)

        def _record(self, verdict: RubricVerdict) -> float:
            self.score = rubric_score(verdict)
            self.reason = verdict.reason
            self.details = {"correctness": verdict.correctness / 10, "spec_faithfulness": verdict.spec_faithfulness / 10,
                            "unsupported": verdict.unsupported}
            self.success = self.score >= self.threshold
            return self.score

        def is_successful(self) -> bool:
            return bool(self.success)

        @property
        def __name__(self):
            return "Rubric"

    return RubricMetric


async def measure(metric, test_case) -> dict[str, Any]:
    """One metric on one case as a score record: scored, or unscored with the raw reply and the reason."""
    try:
        score = await metric.a_measure(test_case, _show_indicator=False)
    except JudgeUnscored as exc:
        return {"score": None, "passed": None, "reason": None, "unscored": True, "raw": exc.raw, "error": exc.message}
    except Exception as exc:  # noqa: BLE001 - DeepEval's own errors leave the sample unscored too, with the message
        return {"score": None, "passed": None, "reason": None, "unscored": True, "raw": None,
                "error": f"{type(exc).__name__}: {exc}"[:500]}
    if not isinstance(score, (int, float)) or not 0 <= score <= 1:
        return {"score": None, "passed": None, "reason": None, "unscored": True, "raw": None,
                "error": f"the metric returned no score in [0, 1] ({score!r})"}
    record = {"score": round(float(score), 4), "passed": bool(metric.is_successful()), "reason": metric.reason,
              "unscored": False, "raw": None}
    details = getattr(metric, "details", None)
    if details:
        record["details"] = details
    return record
