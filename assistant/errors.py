"""The assistant's exceptions: one base, so the CLI and the API can turn any of them into a
clear message instead of a traceback. The API maps the families to HTTP statuses
(``InvalidInput`` 400, ``NotFound`` 404, ``EngineError`` / ``StoreUnavailable`` 503)."""


class AssistantError(Exception):
    """Base of every error the assistant reports to a person."""


class ConfigError(AssistantError):
    """A setting or the retrieval configuration file is invalid."""


class SourceError(AssistantError):
    """A source (articles JSON, chunks JSON, sitemap) cannot be read or has bad records."""


class EmptyCorpusError(SourceError):
    """A source holds no article or chunk with text."""


class EngineError(AssistantError):
    """The search engine failed or refused a request."""


class EngineUnavailable(EngineError):
    """The search engine cannot be reached, or has no index yet."""


class IndexBusy(EngineError):
    """Another index job holds the index's job lock: only one job at a time on an index."""


class IndexMismatch(EngineError):
    """An existing index was built with another vector size, model or passage recipe: rebuild it."""


class InvalidInput(AssistantError):
    """A value given by a caller (a reader, an API client) is not acceptable."""


class InvalidQuestion(InvalidInput):
    """A question is empty, only punctuation, or too long; or its category is unknown."""


class InvalidFeedback(InvalidInput):
    """A feedback value other than 1 / -1, or a comment that is too long."""


class NotFound(AssistantError):
    """Something a caller names (a conversation, an exchange) does not exist."""


class UnknownConversation(NotFound):
    """A follow-up or a feedback names a conversation that the log does not hold."""


class UnknownExchange(NotFound):
    """A feedback names an exchange that the log does not hold (or not in that conversation)."""
