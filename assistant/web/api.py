"""The JSON API: ``POST /question`` (JSON or server-sent events), ``POST /feedback``,
``GET /health``, ``GET /openapi.json``, ``GET /metrics``.

Bodies are strict: JSON objects only (``Content-Type: application/json``), exactly the
documented fields with their types; anything else is a 4xx with ``{"error": "..."}`` naming
what is wrong. Every error of the app — werkzeug's 404/405/413 included — is JSON, never HTML,
never a traceback.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Flask, Response, current_app, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from assistant.answering.conversations import ConversationUnavailable
from assistant.answering.llm import LLMError
from assistant.answering.request import Ask, normalise_id
from assistant.conversation_log import StoreUnavailable
from assistant.errors import AssistantError, EngineError, InvalidInput, NotFound
from assistant.safe_text import check_strings
from assistant.web.admin import admin_required
from assistant.web.openapi import openapi_document

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

QUESTION_FIELDS = ("question", "conversation_id", "category")
FEEDBACK_FIELDS = ("exchange_id", "conversation_id", "feedback", "comment")


class ApiError(Exception):
    """A request the API refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _services():
    return current_app.extensions["assistant"]


def _metrics():
    return current_app.extensions["metrics"]


# -- errors ----------------------------------------------------------------------------------


def error_status(exc: BaseException) -> tuple[int, str]:
    """HTTP status and message for a library error."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, InvalidInput):
        return 400, str(exc)
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(exc, ConversationUnavailable):
        return 503, str(exc)
    if isinstance(exc, LLMError):
        return 502, f"the language model failed: {exc}"
    if isinstance(exc, EngineError):
        return 503, f"the search engine is unavailable: {exc}"
    if isinstance(exc, StoreUnavailable):
        return 503, f"the conversation log is unavailable: {exc}"
    if isinstance(exc, AssistantError):
        return 500, str(exc)
    return 500, "internal server error"


def _error_response(status: int, message: str, **extra) -> Response:
    response = jsonify({"error": message, **{k: v for k, v in extra.items() if v is not None}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if isinstance(e, RequestEntityTooLarge):
            message = f"request body too large (at most {app.config['MAX_CONTENT_LENGTH'] // 1024} KB)"
        else:
            message = e.description or e.name
        response = _error_response(e.code or 500, message)
        if e.code == 405 and getattr(e, "valid_methods", None):
            response.headers["Allow"] = ", ".join(e.valid_methods)
        return response

    @app.errorhandler(ApiError)
    @app.errorhandler(AssistantError)
    def library_error(e: Exception):
        status, message = error_status(e)
        if status >= 500:
            log.warning("%s: %s", type(e).__name__, e)
        return _error_response(status, message, exchange_id=getattr(e, "exchange_id", None),
                               conversation_id=getattr(e, "conversation_id", None))

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error_response(500, "internal server error")


# -- request bodies --------------------------------------------------------------------------


def json_body(allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    """The request's JSON object, checked for content type, syntax, depth, Unicode (no lone
    surrogate, no NUL anywhere) and field names: the one place a body becomes data."""
    if not request.is_json:
        got = request.mimetype or "none"
        raise ApiError(415, f"Content-Type must be application/json (got {got})")
    raw = request.get_data(cache=True)  # RequestEntityTooLarge (413) beyond MAX_CONTENT_LENGTH
    if not raw.strip():
        raise ApiError(400, "the body is empty: expected a JSON object")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not valid UTF-8 JSON") from None
    except RecursionError:  # [[[[… a thousand levels deep: the decoder's stack runs out
        raise ApiError(400, "the body is nested too deeply to be a request") from None
    except ValueError as e:
        detail = f"{e.msg} at line {e.lineno}, column {e.colno}" if hasattr(e, "msg") else str(e)
        raise ApiError(400, f"the body is not valid JSON ({detail})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {_json_type(body)}")
    # "\ud800" and "\u0000" are valid JSON but no text downstream takes them: refused here,
    # once, for every field of every endpoint (questions, ids, categories, comments).
    check_strings(body)
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in body]
    if missing:
        raise ApiError(400, f"missing field(s) {', '.join(map(repr, missing))}")
    return body


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string(body: dict, name: str, *, optional: bool = False) -> str | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name!r} must be a string, not {_json_type(value)}")
    return value


def _wants_stream() -> bool:
    flag = request.args.get("stream", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/event-stream"])
    return best == "text/event-stream" and "text/event-stream" in request.accept_mimetypes


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


# -- routes ----------------------------------------------------------------------------------


@bp.post("/question")
def question():
    body = json_body(QUESTION_FIELDS, required=("question",))
    ask = Ask.parse(body["question"], body.get("conversation_id"), body.get("category"))
    assistant = _services().assistant

    if not _wants_stream():
        return jsonify(assistant.answer(ask).to_dict())

    # Bad input, an unknown conversation, the engine down: raised here, a plain JSON error.
    events = assistant.answer_stream(ask)
    first = next(events)  # the flow has started: from now on it logs whatever happens

    def generate():
        try:
            yield _sse(*first)
            for event, data in events:
                yield _sse(event, data)
        except Exception as e:  # noqa: BLE001 - the stream has begun: report in-band
            status, message = error_status(e)
            if status >= 500 and not isinstance(e, AssistantError):
                log.exception("unexpected error while streaming an answer")
            else:
                log.warning("streamed answer failed: %s", e)
            yield _sse("error", {"error": message, "status": status,
                                 **({"exchange_id": e.exchange_id} if hasattr(e, "exchange_id") else {})})
        finally:
            events.close()

    return Response(stream_with_context(generate()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@bp.post("/feedback")
def feedback():
    body = json_body(FEEDBACK_FIELDS, required=("feedback",))
    exchange_id = body.get("exchange_id")
    conversation_id = body.get("conversation_id")
    if exchange_id is None and conversation_id is None:
        raise ApiError(400, "missing field: exchange_id (the answer rated) or conversation_id "
                            "(its latest answer)")
    if exchange_id is not None:
        exchange_id = normalise_id(exchange_id, "exchange_id")
    if conversation_id is not None:
        conversation_id = normalise_id(conversation_id)
    outcome = _services().store.save_feedback(
        body["feedback"], _string(body, "comment", optional=True),
        exchange_id=exchange_id, conversation_id=conversation_id)
    _metrics().feedback_given(body["feedback"])
    if outcome == "spooled":  # the log is down: kept, checked when it is back
        return jsonify(status="accepted"), 202
    return jsonify(status="ok")


@bp.get("/health")
def health():
    body, serving = _services().health()
    response = jsonify(body)
    response.status_code = 200 if serving else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@bp.get("/metrics")
@admin_required
def metrics():
    return _metrics().response()
