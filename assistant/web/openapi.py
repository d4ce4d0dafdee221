"""The OpenAPI 3.1 description of the service, served at ``GET /openapi.json``.

Laid out so that a change is one line:

* a field: one line in its schema under :data:`SCHEMAS` (``"covered": {"type": "boolean"}``,
  plus its name in ``required`` when every reply carries it);
* a status of one endpoint: one line in that operation's ``responses``
  (``"429": _error("Too many questions from this address.")``); a status every endpoint can
  give: one line in :data:`COMMON_ERRORS`;
* an endpoint: one entry in :func:`paths` (``"/logout": {"post": _operation(...)}``);
* a server-sent event: one line in :data:`SSE_EVENTS` (the grammar below follows).

Every response carries ``X-Request-ID``. The SSE reply of ``POST /question`` is described as
``text/event-stream`` whose ``schema`` is one event (OpenAPI 3.1's convention, which
schemathesis checks event by event: the ``event`` name and its ``data`` line as JSON of that
event's schema, ``contentMediaType``/``contentSchema``), with the stream's grammar and order
as ``x-sse-grammar``/``x-sse-order``: :func:`check_sse` is the checker the fuzzing adds.
"""

from __future__ import annotations

import json
import re

from assistant.conversation_log.store import MAX_COMMENT_CHARS
from assistant.documents import CATEGORIES
from assistant.answering.request import MAX_QUESTION_CHARS

HEX_ID = "^[0-9a-fA-F]{32}$"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


# Every response carries X-Request-ID; the app's own also carry the security headers
# (assistant/web/security.py; not those the HTTP server writes for a malformed request).
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
                    "X-Frame-Options")
_HEADERS = {name: {"$ref": f"#/components/headers/{name}"}
            for name in ("X-Request-ID", *SECURITY_HEADERS)}


def _response(description: str, media: dict | None = None, **headers: dict) -> dict:
    response = {"description": description, "headers": {**_HEADERS, **headers}}
    if media:
        response["content"] = media
    return response


def _json(schema: dict, description: str, **headers: dict) -> dict:
    return _response(description, {"application/json": {"schema": schema}}, **headers)


def _error(description: str, **headers: dict) -> dict:
    return _json(_ref("Error"), description, **headers)


def _text(media_type: str, description: str) -> dict:
    return _response(description, {media_type: {"schema": {"type": "string"}}})


def _page_or_error(description: str, **headers: dict) -> dict:
    """An error a person gets as an HTML page and a machine as JSON (the Accept header decides)."""
    return _response(description, {"application/json": {"schema": _ref("Error")},
                                   "text/html": {"schema": {"type": "string"}}}, **headers)


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before asking again.",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
TOO_MANY = {"429": _error("Too many requests from this client (RATE_LIMIT).", **RETRY_AFTER)}
# What the admin pages (the dashboard, its data, /metrics) answer someone who is not the owner.
ADMIN_REFUSALS = {
    "302": _response("A person (Accept: text/html) without a session: to the login form.",
                     Location={"schema": {"type": "string"}}),
    "401": _error("No or wrong `Authorization: Bearer <ADMIN_TOKEN>`.",
                  **{"WWW-Authenticate": {"schema": {"type": "string"}}}),
    "403": _page_or_error("Admin pages refused: no ADMIN_TOKEN and the server listens on a "
                          "public interface, or the visitor is not on this machine."),
}
ADMIN_SECURITY = [{"bearer": []}, {"session": []}]

# Statuses any request can get, from the app or from the HTTP server itself (malformed request
# line or headers, headers or body too large: JSON too, see assistant/web/serving.py).
COMMON_ERRORS = {
    "400": _error("Malformed request: the request line, a header or the body cannot be read."),
    "405": _error("Method not allowed on this path.",
                  Allow={"description": "The methods the path accepts.",
                         "schema": {"type": "string"}}),
    "413": _error("Request body too large (the app refuses more than 64 KB)."),
    "431": _error("Request header fields too large."),
    "500": _error("Unexpected server error (logged with the request id)."),
}
BODY_ERRORS = {
    "400": _error("Invalid body: not JSON, not an object, nested too deeply, text that is not "
                  "valid Unicode (a lone surrogate such as \\ud800) or holds a NUL character, "
                  "missing/empty/too long fields, wrong types, unknown fields (named in the "
                  "message), bad conversation id or category; or a malformed request."),
    "415": _error("Content-Type is not application/json."),
}

# The server-sent events of a streamed answer, in order: sources, token (repeated), then done
# or error. name -> the JSON schema of the event's data line.
SSE_EVENTS = {
    "sources": _ref("StreamSources"),
    "token": _ref("StreamToken"),
    "done": _ref("Answer"),
    "error": _ref("StreamError"),
}
# One event: "event: <name>\ndata: <one line of JSON>\n\n"; the stream is one or more.
SSE_PATTERN = (r"^(event: (" + "|".join(SSE_EVENTS) + r")\ndata: [^\n]+\n\n)+$")


def sse_event_schema() -> dict:
    """One server-sent event: its name, and its data line as JSON of that event's schema."""
    return {"description": "One server-sent event: sources, token..., done | error.",
            "oneOf": [{"type": "object", "required": ["event", "data"],
                       "properties": {"event": {"const": name},
                                      "data": {"type": "string",
                                               "contentMediaType": "application/json",
                                               "contentSchema": schema}}}
                      for name, schema in SSE_EVENTS.items()]}


def _operation(operation_id: str, summary: str, responses: dict, *, description: str = "",
               body: str | None = None, parameters: list | None = None,
               common: dict = COMMON_ERRORS, security: list | None = None) -> dict:
    operation = {"operationId": operation_id, "summary": summary}
    if security:
        operation["security"] = security
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(body)}}}
        responses = {**BODY_ERRORS, **responses}
    operation["responses"] = {**common, **responses}
    return operation


def paths() -> dict:
    answer_ref = _ref("Answer")
    return {
        "/question": {"post": _operation(
            "askQuestion", "Answer a question (optionally a follow-up in a conversation).",
            description=(
                "JSON by default. With `Accept: text/event-stream` or `?stream=1` the answer is "
                "streamed as server-sent events (one event per `schema`): `sources` first, then "
                "`token` (`{text}`) repeated, then `done` (the Answer object), or `error` "
                "(`{error, status}`) if the LLM fails mid-way. Errors found before the stream "
                "starts are plain JSON errors with their HTTP status."),
            parameters=[{
                "name": "stream", "in": "query", "required": False,
                "description": "1/true/yes/on: stream the answer as server-sent events; "
                               "0/false/no/off: JSON; absent: the Accept header decides.",
                "schema": {"type": "string",
                           "enum": ["1", "true", "yes", "on", "0", "false", "no", "off"]},
            }],
            body="QuestionRequest",
            responses={
                "200": _response("The answer and its sources.", {
                    "application/json": {"schema": answer_ref},
                    "text/event-stream": {
                        # OpenAPI 3.1: `schema` describes one event (what schemathesis checks
                        # event by event); the stream's grammar is x-sse-grammar.
                        "schema": sse_event_schema(),
                        "x-sse-grammar": SSE_PATTERN,
                        "x-sse-order": "sources, then token (0 or more), then done or error",
                    },
                }),
                "404": _error("Unknown conversation_id."),
                **TOO_MANY,
                "502": _error("The LLM failed or could not be reached (the exchange is logged "
                              "with status llm_error)."),
                "503": _error("The search engine is unavailable (no index, cannot be read or "
                              "reached), or a follow-up's conversation cannot be read while "
                              "the conversation log is down."),
            })},
        "/feedback": {"post": _operation(
            "giveFeedback", "Thumbs up (1) or down (-1) on one answer.",
            description=(
                "Names the answer by its `exchange_id` (every reply carries one, in the JSON "
                "answer and in the stream's `sources` and `done` events). A `conversation_id` "
                "alone rates that conversation's latest answer; with both, the exchange must "
                "belong to the conversation."),
            body="FeedbackRequest",
            responses={
                "200": _json(_ref("FeedbackResponse"), "Stored."),
                "202": _json(_ref("FeedbackResponse"),
                             "Accepted: the conversation log is down, the feedback is spooled "
                             "and stored when it is back."),
                "404": _error("Unknown exchange_id or conversation_id, or an exchange of "
                              "another conversation."),
                **TOO_MANY,
            })},
        "/health": {"get": _operation(
            "health", "State of the search engine, the conversation log and the LLM.",
            responses={
                "200": _json(_ref("Health"), "Engine and database are up (an LLM missing is "
                             "not an error: answers are then extractive).",
                             **{"Cache-Control": {"schema": {"type": "string",
                                                             "const": "no-store"}}}),
                "503": _json(_ref("Health"), "The engine or the database is down (same shape)."),
            })},
        "/metrics": {"get": _operation(
            "metrics", "Prometheus metrics (text exposition format).",
            security=ADMIN_SECURITY,
            responses={"200": _text("text/plain", "Metrics."), **ADMIN_REFUSALS})},
        "/openapi.json": {"get": _operation(
            "openapi", "This document.",
            responses={"200": _json({"type": "object"}, "OpenAPI 3.1 document.")})},
        "/": {"get": _operation(
            "chatPage", "The chat page (HTML).",
            responses={"200": _text("text/html", "The page.")})},
        "/dashboard": {"get": _operation(
            "dashboardPage", "The monitoring dashboard (HTML).", security=ADMIN_SECURITY,
            responses={"200": _text("text/html", "The page."), **ADMIN_REFUSALS})},
        "/dashboard/data": {"get": _operation(
            "dashboardData", "The dashboard's figures over the last `hours`.",
            security=ADMIN_SECURITY,
            parameters=[
                {"name": "hours", "in": "query", "required": False,
                 "description": "Period, in hours (default 24).", "schema": {"type": "string"}},
                {"name": "bucket", "in": "query", "required": False,
                 "description": "Seconds per point of the time series.",
                 "schema": {"type": "string"}},
            ],
            responses={
                "200": _json({"type": "object"}, "Volumes, feedback, relevance, latency, "
                             "tokens and cost, with their time series."),
                **ADMIN_REFUSALS,
                "400": _error("hours or bucket is not a number, or out of range."),
                "503": _error("The conversation log is unavailable."),
            })},
        "/login": {
            "get": _operation(
                "loginForm", "The owner's login form (HTML) for the admin pages.",
                parameters=[{"name": "next", "in": "query", "required": False,
                             "description": "A path of this site to go to after login.",
                             "schema": {"type": "string"}}],
                responses={"200": _text("text/html", "The form."),
                           "302": _response("Already admitted (loopback mode): to `next`.",
                                            Location={"schema": {"type": "string"}}),
                           "403": _page_or_error("Admin pages refused on this server.")}),
            "post": _operation(
                "login", "Check the admin token; on success set the signed session cookie.",
                responses={
                    "303": _response("Logged in: to `next`, with the session cookie.",
                                     Location={"schema": {"type": "string"}},
                                     **{"Set-Cookie": {"schema": {"type": "string"}}}),
                    "400": _text("text/html", "Missing or wrong CSRF token (the form again)."),
                    "401": _text("text/html", "Wrong token (the form again)."),
                    "403": _page_or_error("Admin pages refused on this server."),
                    **TOO_MANY,
                })},
        "/logout": {"post": _operation(
            "logout", "End the owner's session.",
            responses={"303": _response("Logged out: to the login form.",
                                        Location={"schema": {"type": "string"}}),
                       "400": _error("Missing or wrong CSRF token.")})},
        "/widget.js": {"get": _operation(
            "widgetLoader", "The embeddable widget's loader, for the blog's pages.",
            responses={"200": _text("text/javascript", "The script.")})},
        "/embed": {"get": _operation(
            "embedPage", "The chat panel the widget frames (HTML; framable by ALLOWED_ORIGINS).",
            parameters=[{"name": "lang", "in": "query", "required": False,
                         "description": "Interface language (fr, en; fr-CA and the like count).",
                         "schema": {"type": "string"}}],
            responses={"200": _text("text/html", "The panel."),
                       "400": _error("lang is not fr or en.")})},
        "/static/pages/{filename}": {"get": _operation(
            "staticFile", "The pages' scripts, style sheet and icon.",
            parameters=[{"name": "filename", "in": "path", "required": True,
                         "schema": {"type": "string"}}],
            responses={
                "200": _response("The file.", {
                    media: {"schema": {"type": "string"}}
                    for media in ("text/javascript", "text/css", "image/svg+xml")}),
                "404": _error("No such file."),
            })},
        "/articles/{article_id}": {"get": _operation(
            "articlePage", "One article of the indexed corpus (HTML), as sources link to it.",
            parameters=[{"name": "article_id", "in": "path", "required": True,
                         "schema": {"type": "string"}}],
            responses={
                "200": _text("text/html", "The article."),
                "404": _text("text/html", "No such article."),
            })},
    }


SCHEMAS = {
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
                    "description": "One article the answer draws on, its passages under it.",
                    "required": ["article_id", "title", "url", "passages"],
                    "properties": {
                        "article_id": {"type": "string"},
                        "title": {"type": "string"},
                        "url": {"type": "string"},
                        "passages": {"type": "array", "minItems": 1, "items": _ref("Passage")},
                    },
                },
                "Passage": {
                    "type": "object",
                    "required": ["n", "chunk_id", "score"],
                    "properties": {
                        "n": {"type": "integer", "minimum": 1,
                              "description": "The number the answer cites it by: [n]."},
                        "chunk_id": {"type": "string"},
                        "score": {"type": "number"},
                        "excerpt": {"type": "string"},
                    },
                },
                "Related": {
                    "type": "object",
                    "required": ["title", "url"],
                    "properties": {"title": {"type": "string"}, "url": {"type": "string"}},
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
                                 "mode", "model", "response_time", "tokens", "cost", "notices",
                                 "covered", "related"],
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
                        "covered": {"type": "boolean",
                                    "description": "false: the blog does not cover the question "
                                                   "(no sources, no LLM call)."},
                        "related": {"type": "array", "maxItems": 3, "items": _ref("Related"),
                                    "description": "When not covered: the blog's closest "
                                                   "articles, if close enough."},
                        "notices": {"type": "array", "items": _ref("Notice"),
                                    "description": "What the reader should know about this "
                                                   "answer, in the reader's language."},
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
                                               "detail": {"type": ["string", "null"]},
                                               # with LLM_DAILY_BUDGET_USD set
                                               "budget_usd": {"type": "number"},
                                               "spent_today_usd": {"type": "number"},
                                               "capped": {"type": "boolean"}}},
                    },
                },
    "StreamSources": {
        "type": "object",
        "required": ["conversation_id", "exchange_id", "covered", "sources", "related"],
        "properties": {"conversation_id": {"type": "string"},
                       "exchange_id": {"type": "string"},
                       "covered": {"type": "boolean"},
                       "sources": {"type": "array", "items": _ref("Source")},
                       "related": {"type": "array", "items": _ref("Related")}},
    },
    "Notice": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string",
                                "examples": ["quoted_in_french", "llm_budget_reached"]},
                       "message": {"type": "string"}},
    },
    "StreamToken": {
        "type": "object", "required": ["text"], "properties": {"text": {"type": "string"}},
    },
    "StreamError": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"},
                       "status": {"type": "integer", "minimum": 400, "maximum": 599},
                       "exchange_id": {"type": "string"}},
    },
}

HEADERS = {
    "Content-Security-Policy": {"description": "No inline script; framing only of /embed by "
                                               "ALLOWED_ORIGINS.", "schema": {"type": "string"}},
    "X-Content-Type-Options": {"schema": {"type": "string", "const": "nosniff"}},
    "Referrer-Policy": {"schema": {"type": "string"}},
    "X-Frame-Options": {"description": "DENY, except on /embed (framed by the widget).",
                        "schema": {"type": "string", "const": "DENY"}},
    "X-Request-ID": {
        "description": "The request's id: the one it sent when sane, else a new one; in the "
                       "server's log lines of this request.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:\\-]{1,128}$"},
    },
}


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN."},
    "session": {"type": "apiKey", "in": "cookie", "name": "arsonor_admin",
                "description": "Set by POST /login."},
}


def openapi_document(version: str = "0.1.0") -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Arsonor Assistant API",
            "version": version,
            "description": (
                "Answers French/English questions about home-studio audio from the articles of "
                "the Arsonor blog, citing them as [n] (n = position in `sources`). Every error "
                "is a JSON object `{\"error\": \"...\"}`, those of the HTTP server itself "
                "(malformed requests) included. Every response carries an `X-Request-ID` "
                "header (the request's own when it sent a sane one)."),
        },
        "paths": paths(),
        "components": {"schemas": SCHEMAS, "headers": HEADERS,
                       "securitySchemes": SECURITY_SCHEMES},
    }


# -- the SSE checker ---------------------------------------------------------------------------

def parse_sse(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a server-sent events body that follows :data:`SSE_PATTERN`.
    :raises ValueError: saying how the body breaks the grammar."""
    if not re.fullmatch(SSE_PATTERN, text):
        raise ValueError(f"the stream does not follow the event grammar: {text[:200]!r}")
    events = []
    for block in text.split("\n\n")[:-1]:
        name_line, data_line = block.split("\n")
        events.append((name_line[len("event: "):], json.loads(data_line[len("data: "):])))
    return events


def check_sse(text: str, validate, *, complete: bool = True) -> list[tuple[str, dict]]:
    """Check a streamed answer against the document: the grammar, each event's data against
    its schema (``validate(data, schema)`` raises on a mismatch, e.g. with jsonschema), and
    the order (``sources`` first, ``token``s, one final ``done`` or ``error``). ``complete``
    False: ``text`` is only the stream's first events (a client that stopped reading), so
    the final event is not required."""
    events = parse_sse(text)
    names = [name for name, _ in events]
    last = names[-1] if len(names) > 1 else None
    if names[0] != "sources" or any(n != "token" for n in names[1:-1]) \
            or last not in (("done", "error") if complete else ("token", "done", "error", None)):
        raise ValueError(f"events out of order ({len(names)}): {names[:2]} ... {names[-3:]}")
    for name, data in events:
        validate(data, SSE_EVENTS[name])
    return events
