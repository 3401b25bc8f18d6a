"""C-IMHI samples: a Chinese instruction + the post + an answer (label(s), then 推理：explanation).

A sample is kept as chat ``messages`` (system / user / assistant), the form TRL and chat
templates expect; Alpaca JSON and a Hugging Face ``datasets`` dataset are views of it.
English IMHI samples keep MentalLLaMA's own query / "Reasoning:" layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mentalglm.data.records import Post
from mentalglm.tasks.layout import render_answer
from mentalglm.tasks.schema import Task

SYSTEM_PROMPT_ZH = (
    "你是一名心理健康分析助手，负责分析中文社交媒体帖子。请先给出标签，再以“推理：”开头，"
    "引用帖子中的原话作为证据进行解释。你的输出仅供专业人员参考，不构成医学诊断。"
)
SYSTEM_PROMPT_EN = (
    "You are a mental health analysis assistant for social media posts. Give the answer first, then "
    "'Reasoning:' with evidence from the post. Your output is decision support, not a diagnosis."
)


@dataclass
class Instruction:
    """One interpretable instruction sample."""

    id: str
    task: str
    messages: list[dict[str, str]]
    labels: list[str]
    explanation: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return next(m["content"] for m in self.messages if m["role"] == "user")

    @property
    def answer(self) -> str:
        return next(m["content"] for m in self.messages if m["role"] == "assistant")

    def to_chat(self) -> dict[str, Any]:
        return asdict(self)

    def to_alpaca(self) -> dict[str, Any]:
        system = next((m["content"] for m in self.messages if m["role"] == "system"), "")
        return {
            "id": self.id,
            "task": self.task,
            "instruction": self.meta.get("instruction", self.user),
            "input": self.meta.get("post", ""),
            "output": self.answer,
            "system": system,
        }


def user_turn(task: Task, post_text: str) -> str:
    """Instruction, the post in Chinese quotes, then the task question."""
    return f"{task.instruction}\n帖子：“{post_text}”\n问题：{task.question}"


def make_instruction(task: Task, post: Post, explanation: str | None = None,
                     *, system_prompt: str = SYSTEM_PROMPT_ZH) -> Instruction:
    """A C-IMHI sample whose answer states the gold label(s) and, when given, the explanation."""
    if task.answer_layout == "imhi":
        return make_imhi_instruction(task, post)
    text = post.text
    answer = render_answer(task, post.labels, explanation)
    return Instruction(
        id=post.id,
        task=task.id,
        messages=[
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_turn(task, text)},
            {"role": "assistant", "content": answer},
        ],
        labels=list(post.labels),
        explanation=explanation.strip() if explanation else None,
        source=post.source,
        meta={"instruction": f"{task.instruction}\n问题：{task.question}", "post": text},
    )


def make_imhi_instruction(task: Task, post: Post) -> Instruction:
    """English IMHI keeps the original query and the teacher's "<label>. Reasoning: ..." response."""
    query, response = post.meta.get("query"), post.meta.get("response")
    if not query or not response:
        raise ValueError(f"IMHI post {post.id} lacks meta 'query'/'response'; load it with the imhi loader")
    explanation = response.split("Reasoning:", 1)[1].strip() if "Reasoning:" in response else None
    return Instruction(
        id=post.id,
        task=task.id,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT_EN},
            {"role": "user", "content": query},
            {"role": "assistant", "content": response},
        ],
        labels=list(post.labels),
        explanation=explanation,
        source=post.source,
        meta={"instruction": query, "post": post.text},
    )
