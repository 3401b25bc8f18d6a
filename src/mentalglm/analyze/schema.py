"""The result schema of an analysis: one model for the CLI, the Python API, JSONL exports and the HTTP API.

Pydantic, so the service can publish it as JSON Schema and clients can validate what they receive.
The post text itself is never part of a result: exports must not carry what the user may not share.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1
EngineName = Literal["labels", "attribution", "hybrid", "llm"]


class EvidenceSpan(BaseModel):
    """A piece the explanation quotes, found in the original post at ``[start, end)`` (character offsets)."""

    quote: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    label: str | None = Field(default=None, description="the label this span supports (attribution engine)")
    weight: float | None = Field(
        default=None, description="drop in the label's probability when the span is removed (attribution engine)")


class LabelScore(BaseModel):
    id: str
    name_zh: str
    name_en: str
    confidence: float | None = Field(default=None, description="calibrated probability; null for the llm engine")


class PathwayPart(BaseModel):
    """One decided label of a sentence: a part of the cognitive pathway, or a child of one."""

    id: str = Field(description="label.txt's id: a parent (触发性事件) or parent##child (认知歪曲##以偏概全)")
    part: str = Field(description="the parent: 触发性事件 | 认知歪曲 | 情绪反应 | 驳斥")
    part_en: str = Field(description="triggering event | cognitive distortion | emotional response | disputation")
    child: str | None = Field(default=None, description="the child's name, null for a parent")
    confidence: float = Field(description="the classifier's probability (a parent at least its child's); not "
                              "calibrated: the model card has its dev and test scores")


class PathwaySentence(BaseModel):
    """A sentence of the post, by offsets only (the post text is never part of a result), with its parts."""

    index: int = Field(ge=1, description="1-based position among the post's sentences")
    start: int = Field(ge=0, description="character offset of the sentence in the original post")
    end: int = Field(ge=0)
    parts: list[PathwayPart] = Field(description="decided labels in pathway order, each parent before its child")


class PathwayStage(BaseModel):
    """One step of trigger → distortion → emotional response → disputation, and the sentences that show it."""

    part: str
    part_zh: str
    part_en: str
    sentences: list[int] = Field(description="indexes of the sentences with this part; empty when none shows it")
    children: list[str] = Field(default_factory=list, description="the children decided for this part")
    confidence: float | None = Field(default=None, description="the highest probability of the part in any sentence")


ExplanationSource = Literal["attribution", "llm", "llm_grounded", "attribution_fallback"]


class TaskResult(BaseModel):
    task: str
    task_name_zh: str
    engine: EngineName
    valid: bool = Field(default=True, description="false = INVALID: the LLM answer named no readable label (llm engine)")
    labels: list[LabelScore] = Field(description="the decided labels (empty when INVALID, or when a screened "
                                     "multi-label task found nothing: see nothing_evident)")
    nothing_evident: bool = Field(default=False, description="the task's screen found nothing (no risk level, "
                                  "no distortion): show nothing_evident_zh and no risk wording")
    nothing_evident_zh: str | None = Field(default=None, description="e.g. 无明显风险, 未见明显认知歪曲")
    confidences: dict[str, float] = Field(default_factory=dict, description="calibrated probability of every label")
    explanation: str | None = Field(default=None, description="Chinese explanation quoting the post; null when off or failed")
    evidence: list[EvidenceSpan] = Field(default_factory=list)
    verifier_agrees: bool | None = Field(
        default=None, description="TF-IDF verifier reads the same label from the explanation; null when no verifier "
        "read it (no LLM text, or one that affirms nothing past the verdict, its quote and denials)")
    verifier_reader: str | None = Field(
        default=None, description="who read the label from the explanation: the TF-IDF verifier, or 'definitions' "
        "for one that argues only by denying what the task defines a label as lacking ('没有明确表达自杀意图' for low "
        "risk), or 'descriptions' where the task's label descriptions read the label and the verifier did not")
    qc_passed: bool | None = None
    qc_reasons: list[str] = Field(default_factory=list)
    attempts: int = 0
    model: str | None = Field(default=None, description="the LLM that wrote the explanation, if any")
    explanation_source: ExplanationSource | None = Field(
        default=None, description="who wrote the explanation: the classifier's clause attribution, the LLM "
        "(llm_grounded: under a grammar that copies its quote from the post and states the decided label), or "
        "the attribution because every LLM attempt failed its checks (attribution_fallback, see fallback_reason)")
    fallback_reason: str | None = Field(default=None, description="why the LLM's explanation was not shown")
    error: str | None = Field(default=None, description="why there is no explanation although one was asked for")
    training_domain_similarity: float | None = Field(
        default=None, description="P(the post resembles this task's training posts); null when the task has no check")
    outside_training_domain: bool | None = Field(
        default=None, description="the post is unlike the training posts: the result is less reliable (never changed)")
    sentences: list[PathwaySentence] | None = Field(
        default=None, description="cognitive_pathway only: the post's sentences with their pathway parts")
    pathway: list[PathwayStage] | None = Field(
        default=None, description="cognitive_pathway only: the four steps in order, with the sentences showing each")


class CrisisResource(BaseModel):
    name: str
    contact: str
    note: str = ""


class Notice(BaseModel):
    kind: Literal["not_a_diagnosis", "crisis", "support", "out_of_domain", "outside_training_domain"]
    text: str
    task: str | None = Field(default=None, description="the task a notice is about (outside_training_domain)")
    resources: list[CrisisResource] = Field(default_factory=list)


class PostResult(BaseModel):
    status: Literal["ok"] = "ok"
    schema_version: int = SCHEMA_VERSION
    id: str
    text_length: int
    out_of_domain: bool = Field(description="true when the text is mostly not Chinese (still analysed)")
    cjk_share: float
    pii_scrubbed: dict[str, int] = Field(default_factory=dict, description="PII kinds replaced before any LLM call")
    tasks: dict[str, TaskResult]
    high_risk: bool
    injection_suspected: bool = Field(
        default=False, description="the post holds text addressed to the analyzer (prompt injection); no model read it")
    injection_spans: list[list[int]] = Field(default_factory=list,
                                             description="[start, end) character offsets of that text in the post")
    notices: list[Notice]


class ErrorRecord(BaseModel):
    """A row that could not be analysed (``--keep-going``): it is reported, never skipped silently."""

    status: Literal["error"] = "error"
    schema_version: int = SCHEMA_VERSION
    id: str
    line: int | None = None
    error: str
