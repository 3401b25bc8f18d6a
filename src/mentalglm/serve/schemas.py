"""The request and response bodies of the HTTP API (pydantic, published as the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from mentalglm import __version__
from mentalglm.analyze.engine import InputRow
from mentalglm.analyze.safety import check_locale
from mentalglm.analyze.schema import SCHEMA_VERSION, EngineName, ErrorRecord, PostResult

Locale = Annotated[str, AfterValidator(check_locale)]
"""A crisis-resources locale the analyzer knows: the one check for a request's locale and the server's default."""


class PostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="your id, echoed in the result; default post-N")
    text: str = Field(description="the post; empty or too long gives an error record for this post only")


class AnalysisOptions(BaseModel):
    """What a request may choose of the analysis (for /v1/analyze and /v1/jobs alike)."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] | None = Field(default=None, min_length=1, description="task ids (default: all the server analyses)")
    explain: bool | None = Field(default=None,
                                 description="write explanations (attribution / hybrid / llm engines); default: server's")
    locale: Locale | None = Field(default=None, description="crisis resources locale, zh-CN or en; default: server's")


class AnalyzeRequest(AnalysisOptions):
    posts: list[PostIn] | str = Field(description="posts ({\"id\", \"text\"} objects or plain strings), or one post "
                                                  "as a plain string")

    @field_validator("posts", mode="before")
    @classmethod
    def _strings_are_posts(cls, posts: Any) -> Any:
        """``["帖子一", "帖子二"]`` is the shape users try first: each string is a post's text."""
        if isinstance(posts, list):
            return [{"text": post} if isinstance(post, str) else post for post in posts]
        return posts

    @field_validator("posts")
    @classmethod
    def _some_posts(cls, posts: list[PostIn] | str) -> list[PostIn] | str:
        if isinstance(posts, list) and not posts:
            raise ValueError("give at least one post")
        return posts

    def rows(self) -> list[InputRow]:
        posts = [PostIn(text=self.posts)] if isinstance(self.posts, str) else self.posts
        return [InputRow(post.id or f"post-{i}", post.text) for i, post in enumerate(posts, 1)]


class ModelInfo(BaseModel):
    engine: EngineName
    tasks: list[str]
    explain: bool = Field(description="default of a request's explain")
    locale: str = Field(description="default crisis-resources locale")
    llm: str | None = Field(description="model id of the LLM once it is loaded; null before, or with no LLM")
    schema_version: int = SCHEMA_VERSION
    version: str = __version__


Result = Annotated[PostResult | ErrorRecord, Field(discriminator="status")]


class AnalyzeResponse(BaseModel):
    results: list[Result] = Field(description="one per post, in request order: PostResult or ErrorRecord")
    model: ModelInfo
    engine: EngineName


class LabelInfo(BaseModel):
    id: str
    name_zh: str
    name_en: str
    definition_zh: str
    positive: bool = Field(description="the class a binary task's official F1 is computed on (e.g. high risk)")


class TaskInfo(BaseModel):
    id: str
    name_zh: str
    name_en: str
    type: str
    multi_label: bool
    description_zh: str
    labels: list[LabelInfo]


class TasksResponse(BaseModel):
    tasks: list[TaskInfo]


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "error"]
    model: ModelInfo | None = None
    error: str | None = None


class ErrorBody(BaseModel):
    detail: str
    error: dict[str, str]


