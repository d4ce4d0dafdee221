"""The OpenAPI 3.1 description of the JSON API, served at ``GET /openapi.json``."""

from __future__ import annotations

from assistant.conversation_log.store import MAX_COMMENT_CHARS
from assistant.documents import CATEGORIES
from assistant.answering.request import MAX_QUESTION_CHARS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_COMMON_ERRORS = {
    "405": _error("Method not allowed on this path."),
    "500": _error("Unexpected server error (logged with the request id)."),
}
_BODY_ERRORS = {
    "400": _error("Invalid body: not JSON, not an object, missing/empty/too long fields, wrong "
                  "types, unknown fields (named in the message), bad conversation id or category."),
    "413": _error("Body larger than 64 KB."),
    "415": _error("Content-Type is not application/json."),
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(version: str = "0.1.0") -> dict:
    answer_ref = {"$ref": "#/components/schemas/Answer"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Arsonor Assistant API",
            "version": version,
            "description": (
                "Answers French/English questions about home-studio audio from the articles of "
                "the Arsonor blog, citing them as [n] (n = position in `sources`). Every error "
                "is a JSON object `{\"error\": \"...\"}`. Every response carries an "
                "`X-Request-ID` header (the request's own when it sent a sane one)."),
        },
        "paths": {
            "/question": {
                "post": {
                    "operationId": "askQuestion",
                    "summary": "Answer a question (optionally a follow-up in a conversation).",
                    "description": (
                        "JSON by default. With `Accept: text/event-stream` or `?stream=1` the "
                        "answer is streamed as server-sent events: `sources` "
                        "(`{conversation_id, exchange_id, sources}`), then `token` (`{text}`) repeated, "
                        "then "
                        "`done` (the Answer object), or `error` (`{error, status}`) if the LLM "
                        "fails mid-way. Errors found before the stream starts are plain JSON "
                        "errors with their HTTP status."),
                    "parameters": [{
                        "name": "stream", "in": "query", "required": False,
                        "description": "1/true: stream the answer as server-sent events.",
                        "schema": {"type": "string", "enum": ["1", "true", "0", "false"]},
                    }],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/QuestionRequest"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "The answer and its sources.",
                            "content": {
                                "application/json": {"schema": answer_ref},
                                "text/event-stream": {
                                    "schema": {"type": "string",
                                               "description": "SSE: sources, token…, done | error"}},
                            },
                        },
                        **_BODY_ERRORS,
                        "404": _error("Unknown conversation_id."),
                        "502": _error("The LLM failed or could not be reached (the exchange is "
                                      "logged with status llm_error)."),
                        "503": _error("The search engine is unavailable (no index, cannot be "
                                      "read or reached), or a follow-up's conversation cannot "
                                      "be read while the conversation log is down."),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/feedback": {
                "post": {
                    "operationId": "giveFeedback",
                    "summary": "Thumbs up (1) or down (-1) on one answer.",
                    "description": (
                        "Names the answer by its `exchange_id` (every reply carries one, in the "
                        "JSON answer and in the stream's `sources` and `done` events). A "
                        "`conversation_id` alone rates that conversation's latest answer; with "
                        "both, the exchange must belong to the conversation."),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/FeedbackRequest"}}},
                    },
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/FeedbackResponse"}, "Stored."),
                        "202": _json({"$ref": "#/components/schemas/FeedbackResponse"},
                                     "Accepted: the conversation log is down, the feedback is "
                                     "spooled and stored when it is back."),
                        **_BODY_ERRORS,
                        "404": _error("Unknown exchange_id or conversation_id, or an exchange "
                                      "of another conversation."),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "State of the search engine, the conversation log and the LLM.",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Health"},
                                     "Engine and database are up (an LLM missing is not an "
                                     "error: answers are then extractive)."),
                        "503": _json({"$ref": "#/components/schemas/Health"},
                                     "The engine or the database is down (same shape)."),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format).",
                    "responses": {
                        "200": {"description": "Metrics.",
                                "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {
                        "200": _json({"type": "object"}, "OpenAPI 3.1 document."),
                        **_COMMON_ERRORS,
                    },
                },
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string", "description": "What went wrong."}},
                    "additionalProperties": True,
                },
                "QuestionRequest": {
                    "type": "object",
                    "required": ["question"],
                    "additionalProperties": False,
                    "properties": {
                        "question": {"type": "string", "minLength": 1,
                                     "maxLength": MAX_QUESTION_CHARS,
                                     "description": "French or English; not only punctuation."},
                        "conversation_id": {
                            "type": ["string", "null"], "pattern": "^[0-9a-fA-F]{32}$",
                            "description": "From an earlier answer: makes this a follow-up."},
                        "category": {"type": ["string", "null"], "enum": [*CATEGORIES, None],
                                     "description": "Only search this category of the blog."},
                    },
                },
                "Source": {
                    "type": "object",
                    "required": ["article_id", "title", "url", "chunk_id", "score"],
                    "properties": {
                        "article_id": {"type": "string"},
                        "title": {"type": "string"},
                        "url": {"type": "string"},
                        "chunk_id": {"type": "string"},
                        "score": {"type": "number"},
                    },
                },
                "Tokens": {
                    "type": "object",
                    "required": ["prompt", "completion", "total"],
                    "properties": {"prompt": {"type": "integer"}, "completion": {"type": "integer"},
                                   "total": {"type": "integer"}},
                },
                "Answer": {
                    "type": "object",
                    "required": ["conversation_id", "exchange_id", "question", "answer", "sources",
                                 "mode", "model", "response_time", "tokens", "cost"],
                    "properties": {
                        "conversation_id": {"type": "string"},
                        "exchange_id": {"type": "string",
                                        "description": "This answer, for POST /feedback."},
                        "turn": {"type": "integer"},
                        "question": {"type": "string"},
                        "rewritten_question": {"type": ["string", "null"],
                                               "description": "The stand-alone follow-up searched."},
                        "answer": {"type": "string",
                                   "description": "Cites sources as [n], n = position in sources."},
                        "sources": {"type": "array", "items": {"$ref": "#/components/schemas/Source"}},
                        "mode": {"type": "string", "enum": ["llm", "extractive"]},
                        "model": {"type": ["string", "null"]},
                        "category": {"type": ["string", "null"]},
                        "language": {"type": ["string", "null"], "enum": ["fr", "en", None]},
                        "response_time": {"type": "number", "description": "Seconds."},
                        "tokens": {"$ref": "#/components/schemas/Tokens"},
                        "cost": {"type": ["number", "null"],
                                 "description": "USD; null when the model's price is unknown."},
                    },
                },
                "FeedbackRequest": {
                    "type": "object",
                    "required": ["feedback"],
                    "description": "exchange_id, conversation_id, or both.",
                    "anyOf": [{"required": ["exchange_id"]}, {"required": ["conversation_id"]}],
                    "additionalProperties": False,
                    "properties": {
                        "exchange_id": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                        "conversation_id": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                        "feedback": {"type": "integer", "enum": [1, -1]},
                        "comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT_CHARS},
                    },
                },
                "FeedbackResponse": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok", "accepted"]}},
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "engine", "database", "llm"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "degraded"]},
                        "engine": {"type": "object", "required": ["ok", "name", "chunks"],
                                   "properties": {"ok": {"type": "boolean"},
                                                  "name": {"type": "string"},
                                                  "chunks": {"type": ["integer", "null"]},
                                                  "detail": {"type": "string"}}},
                        "database": {"type": "object", "required": ["ok", "backend"],
                                     "properties": {"ok": {"type": "boolean"},
                                                    "backend": {"type": "string"},
                                                    "spooled": {"type": "integer"},
                                                    "detail": {"type": "string"}}},
                        "llm": {"type": "object", "required": ["ok", "mode", "model", "detail"],
                                "properties": {"ok": {"type": "boolean"},
                                               "mode": {"type": "string", "enum": ["llm", "extractive"]},
                                               "model": {"type": ["string", "null"]},
                                               "detail": {"type": ["string", "null"]}}},
                    },
                },
            },
        },
    }
