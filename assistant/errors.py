"""The assistant's exceptions: one base, so the CLI and the API can turn any of them into a
clear message instead of a traceback."""


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


class IndexMismatch(EngineError):
    """An existing index was built with another vector size or model: rebuild it."""


class InvalidQuestion(AssistantError):
    """A question is empty, only punctuation, or too long."""
