"""responses-bridge: the OpenAI Responses API over Chat Completions providers."""

__version__ = "0.1.0"
