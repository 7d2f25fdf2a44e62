"""Request and response bodies of the router endpoints, and the one place JSON bodies are read."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from intelrouter.capture import Outcome
from intelrouter.errors import InputError

M = TypeVar("M", bound=BaseModel)


MAX_OUTCOMES = 1000  # outcomes in one POST /outcome
OUTCOME_MAX_BODY = 1 << 20


class RouteRequest(BaseModel):
    """One query to route; user and session ids keep a user on the same model variant."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(description="The user's query.")
    user_id: str | None = Field(None, max_length=256, description="Caller's user id (stored hashed).")
    phone_number: str | None = Field(
        None, max_length=256, validation_alias=AliasChoices("phone_number", "phoneNumber"),
        description="The user's phone number, also as `phoneNumber` (seed 004's NLU clients): the user id when "
                    "user_id is absent (stored hashed).")
    session_id: str | None = Field(None, max_length=256, description="Conversation id (stored hashed).")
    language: str | None = Field(None, max_length=16, description="Language code, e.g. `en`.")


class RouteResponse(BaseModel):
    """The routing decision for one query."""

    query_id: str
    label: str = Field(description="Predicted label, or UNCERTAIN below the model's threshold.")
    confidence: float
    uncertain: bool
    top_label: str = Field(description="The most likely label, even when uncertain.")
    route: str = Field(description="Target for the label (settings.routes; UNCERTAIN -> fallback_route).")
    model_version: str
    variant: str = Field(description="`production` or `staging` (the canary).")


class LabelRequest(BaseModel):
    """A label for an answered query: user feedback or a correction."""

    model_config = ConfigDict(extra="ignore")

    query_id: str = Field(min_length=1, max_length=36)
    label: str = Field(min_length=1, max_length=200)


class LabelResponse(BaseModel):
    """What was stored in ml_data."""

    query_id: str
    label: str
    source: str
    written: bool = Field(description="False when the same label was already stored.")


class OutcomeBatch(BaseModel):
    """Several outcomes in one request (the body of POST /outcome may also be one outcome alone)."""

    model_config = ConfigDict(extra="forbid")

    outcomes: list[Outcome] = Field(min_length=1, max_length=MAX_OUTCOMES)


class OutcomeResponse(BaseModel):
    """How many queries now carry the caller's outcome."""

    updated: int


class ErrorResponse(BaseModel):
    """Every error answer: one line saying what is wrong."""

    detail: str


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `requestBody` for an endpoint that reads its JSON body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def outcome_body_schema() -> dict[str, Any]:
    """OpenAPI `requestBody` of POST /outcome: one outcome, or `{"outcomes": [...]}`."""
    one = Outcome.model_json_schema()
    many = {"type": "object", "required": ["outcomes"], "additionalProperties": False, "properties": {
        "outcomes": {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_OUTCOMES}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [one, many]}}}}}


class BodyError(InputError):
    """A request body that cannot be used; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_content_type(content_type: str | None) -> None:
    """Only JSON bodies are accepted."""
    if (content_type or "").split(";", 1)[0].strip().lower() != "application/json":
        raise BodyError(415, "send a JSON body with Content-Type: application/json")


def too_large(max_bytes: int) -> BodyError:
    """The error for a body over the limit."""
    return BodyError(413, f"request body is over {max_bytes} bytes")


def parse_body(raw: bytes, model: type[M]) -> M:
    """Parse and validate a JSON body; every problem is a BodyError with a 4xx status and one line."""
    return _validate(_json_object(raw), model)


def parse_outcomes(raw: bytes) -> list[Outcome]:
    """The outcomes of a POST /outcome body: one outcome object, or `{"outcomes": [...]}`."""
    data = _json_object(raw)
    if "outcomes" in data:
        return _validate(data, OutcomeBatch).outcomes
    return [_validate(data, Outcome)]


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BodyError(422, "expected a JSON object")
    return data


def _validate(data: dict[str, Any], model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise BodyError(422, f"{field}: {err['msg']}") from None


async def read_body(request: Request, model: type[M], max_bytes: int) -> M:
    """Read, parse and validate the JSON body of a FastAPI request."""
    return parse_body(await read_raw(request, max_bytes), model)


async def read_raw(request: Request, max_bytes: int) -> bytes:
    """The raw JSON body of a FastAPI request, its content type and size checked."""
    check_content_type(request.headers.get("content-type"))
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise too_large(max_bytes)
    raw = await request.body()
    if len(raw) > max_bytes:
        raise too_large(max_bytes)
    return raw
