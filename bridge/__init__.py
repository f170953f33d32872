"""responses-bridge: the OpenAI Responses API over Chat Completions providers."""

# The next release's number until it is made (CHANGELOG.md, "Unreleased").
__version__ = "0.8.0.dev0"
