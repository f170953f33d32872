"""Strict fakes of real providers: each streams as its provider does and refuses a request
exactly where its provider's documentation (and its users' public reports) say it does.

Each fake remembers what its "model" said (the reasoning, signatures and details of every
turn it streamed) and refuses a replayed turn that comes back without it, or altered: the
providers' rule ("must be passed back", "must be preserved completely") made checkable.
The error texts are the providers' own where they have one (sources in docs/providers.md);
where a provider only degrades instead of refusing (MiniMax), the fake refuses with a
message of its own, saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fake_upstream import DONE, Reply, completion_of, sse

Refusal = tuple[int, Any]


@dataclass
class Call:
    """A tool call the fake's model makes."""

    id: str
    name: str
    arguments: str


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-strict",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "strict",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def openai_error(message: str, status: int = 400) -> Refusal:
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request_error",
        }
    }
    return status, body


def pairing_problem(messages: list[dict[str, Any]]) -> str | None:
    """Chat Completions' own rule: tool messages answer the calls just before them."""
    pending: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if pending and role != "tool":
            return f"tool_calls without tool messages before message index {index}"
        if role == "assistant" and message.get("tool_calls"):
            pending = {call["id"] for call in message["tool_calls"]}
        elif role == "tool":
            if message.get("tool_call_id") not in pending:
                return f"tool message at index {index} answers no pending tool call"
            pending.discard(message["tool_call_id"])
    return "tool_calls without tool messages at the end" if pending else None


@dataclass
class StrictProvider:
    """What every strict fake shares: the memory of what its model said."""

    # call id -> the reasoning text the turn that made the call streamed ("" for none)
    reasoning_of_call: dict[str, str] = field(default_factory=dict)
    # answer text -> the reasoning streamed with it
    reasoning_of_text: dict[str, str] = field(default_factory=dict)
    # requests refused, with the reason
    refused: list[str] = field(default_factory=list)

    def refusal(self, body: dict[str, Any]) -> Refusal | None:
        problem = pairing_problem(body.get("messages", []))
        if problem is not None:
            return openai_error(problem)
        return self.check(body)

    def check(self, body: dict[str, Any]) -> Refusal | None:
        return None

    def remember(self, reasoning: str, calls: list[Call], text: str | None) -> None:
        for call in calls:
            self.reasoning_of_call[call.id] = reasoning
        if text:
            self.reasoning_of_text[text] = reasoning

    def said(self, message: dict[str, Any]) -> str | None:
        """The reasoning this fake streamed with a replayed assistant message, if it is one
        of its own."""
        for call in message.get("tool_calls") or ():
            if call["id"] in self.reasoning_of_call:
                return self.reasoning_of_call[call["id"]]
        content = message.get("content")
        if isinstance(content, str) and content in self.reasoning_of_text:
            return self.reasoning_of_text[content]
        return None


def thinking_on(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return not (isinstance(thinking, dict) and thinking.get("type") == "disabled")


# ---- DeepSeek (V3.2 / V4 thinking mode) --------------------------------------------------

# api-docs.deepseek.com/guides/thinking_mode; the V4 wording of the refusal.
DEEPSEEK_MISSING = "The `reasoning_content` in the thinking mode must be passed back to the API."
DEEPSEEK_TOOL_CHOICE = "Thinking mode does not support this tool_choice"
DEEPSEEK_JSON_WORD = (
    "Prompt must contain the word 'json' in some form to use 'response_format' of type "
    "'json_object'."
)
DEEPSEEK_NO_SCHEMA = "This response_format type is unavailable now"


@dataclass
class DeepSeek(StrictProvider):
    """With `tools` in the request and thinking on, every earlier assistant message must
    carry `reasoning_content`, exactly as it was streamed ("" where there was none), tool
    calls or not; json_schema is refused; json_object wants "json" in the prompt; only
    auto/none tool_choice while thinking."""

    def check(self, body: dict[str, Any]) -> Refusal | None:
        thinking = thinking_on(body)
        messages = body["messages"]
        if thinking and body.get("tools"):
            for message in messages:
                if message["role"] != "assistant":
                    continue
                if "reasoning_content" not in message or "reasoning_details" in message:
                    self.refused.append("missing reasoning_content")
                    return openai_error(DEEPSEEK_MISSING)
                said = self.said(message)
                if said is not None and message["reasoning_content"] != said:
                    self.refused.append(
                        f"altered reasoning_content: {message['reasoning_content']!r}"
                    )
                    return openai_error(DEEPSEEK_MISSING)
        choice = body.get("tool_choice")
        if thinking and choice not in (None, "auto", "none"):
            return openai_error(DEEPSEEK_TOOL_CHOICE)
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            return openai_error(DEEPSEEK_NO_SCHEMA)
        if response_format.get("type") == "json_object":
            prompt = " ".join(
                str(m.get("content")) for m in messages if m["role"] in ("system", "user")
            )
            if "json" not in prompt.lower():
                return openai_error(DEEPSEEK_JSON_WORD)
        return None

    def turn(
        self,
        *,
        reasoning: str = "",
        calls: list[Call] | None = None,
        text: str | None = None,
        usage: bool = True,
    ) -> Reply:
        """A turn as DeepSeek V4 streams it: an empty reasoning_content first (and perhaps
        nothing more of it), the reasoning, the text, the calls (id and name first)."""
        calls = calls or []
        self.remember(reasoning, calls, text)
        frames = [sse(chunk({"role": "assistant", "content": None, "reasoning_content": ""}))]
        frames += [sse(chunk({"reasoning_content": part})) for part in _pieces(reasoning)]
        frames += [sse(chunk({"content": part})) for part in _pieces(text or "")]
        for index, call in enumerate(calls):
            first = {"index": index, "id": call.id, "type": "function"}
            first["function"] = {"name": call.name, "arguments": ""}
            frames.append(sse(chunk({"tool_calls": [first]})))
            for part in _pieces(call.arguments):
                frames.append(
                    sse(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
                )
        frames.append(sse(chunk({}, "tool_calls" if calls else "stop")))
        if usage:
            frames.append(sse(_usage(17, 9)))
        frames.append(DONE)
        return Reply(frames)


# ---- Moonshot Kimi (K2 thinking, K2.5, K2.6) ------------------------------------------------

KIMI_MISSING = (
    "thinking is enabled but reasoning_content is missing in assistant tool call message at "
    "index {index}"
)
KIMI_TOOL_CHOICE = "tool_choice 'specified' is incompatible with thinking enabled"


@dataclass
class Kimi(DeepSeek):
    """While thinking, an assistant message with tool calls must carry reasoning_content
    (as it was streamed); a plain one need not; a named tool_choice is refused."""

    def check(self, body: dict[str, Any]) -> Refusal | None:
        thinking = thinking_on(body)
        for index, message in enumerate(body["messages"]):
            if message["role"] != "assistant" or not message.get("tool_calls") or not thinking:
                continue
            said = self.said(message)
            if "reasoning_content" not in message or (
                said is not None and message["reasoning_content"] != said
            ):
                self.refused.append(f"tool-call message {index} without its reasoning")
                return openai_error(KIMI_MISSING.format(index=index))
        choice = body.get("tool_choice")
        if thinking and isinstance(choice, dict):
            return openai_error(KIMI_TOOL_CHOICE)
        return None


# ---- Gemini 3 (the OpenAI-compatible endpoint) --------------------------------------------

GEMINI_MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required "
    "for tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {index}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)
GEMINI_CORRUPTED = "Corrupted thought signature."
# The fields the endpoint takes (ai.google.dev/api/compatibility and its OpenAI page);
# any other is "Unknown name".
GEMINI_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_completion_tokens",
        "max_tokens",
        "n",
        "response_format",
        "stop",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "tool_choice",
        "tools",
        "audio",
        "modalities",
        "parallel_tool_calls",
        "presence_penalty",
        "user",
        "reasoning_effort",
        "extra_body",
    }
)
# Google's documented stand-ins for calls it never signed.
GEMINI_DUMMIES = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)


def gemini_error(code: int, message: str, status: str = "INVALID_ARGUMENT") -> Refusal:
    # The endpoint answers with a list of error envelopes.
    return code, [{"error": {"code": code, "message": message, "status": status}}]


@dataclass
class Gemini(StrictProvider):
    """Every call in the current turn (after the last user message) that opens an assistant
    message must come back with its thought signature, unchanged; unknown top-level fields
    and reasoning_effort beside thinking_config are refused."""

    signatures: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def check(self, body: dict[str, Any]) -> Refusal | None:
        for name in body:
            if name not in GEMINI_FIELDS:
                return gemini_error(
                    400, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
                )
        thinking_config = (
            body.get("extra_body", {}).get("google", {}).get("thinking_config")
            if isinstance(body.get("extra_body"), dict)
            else None
        )
        if thinking_config is not None and "reasoning_effort" in body:
            return gemini_error(400, "Request contains an invalid argument.")
        if body.get("parallel_tool_calls") is True:
            return gemini_error(400, "Request contains an invalid argument.")
        messages = body["messages"]
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        for index, message in enumerate(messages):
            calls = message.get("tool_calls") or []
            if message["role"] != "assistant" or not calls:
                continue
            for position, call in enumerate(calls):
                given = (call.get("extra_content") or {}).get("google", {}).get("thought_signature")
                known = self.signatures.get(call["id"])
                if given is not None and given not in GEMINI_DUMMIES and given != known:
                    self.refused.append(f"call {call['id']}: signature {given!r}, made {known!r}")
                    return gemini_error(400, GEMINI_CORRUPTED)
                if index > last_user and position == 0 and given is None:
                    self.refused.append(f"call {call['id']} unsigned")
                    return gemini_error(
                        400,
                        GEMINI_MISSING_SIGNATURE.format(name=call["function"]["name"], index=index),
                    )
        return None

    def turn(
        self,
        *,
        thought: str = "",
        calls: list[Call] | None = None,
        text: str | None = None,
        signature_apart: bool = False,
    ) -> Reply:
        """A turn as the endpoint streams it: thought summaries in content inside
        <thought> tags, each whole call in one delta without an index (only the first
        signed, parallel calls in chunks of their own), finish_reason "stop" even after
        calls, cumulative usage on every chunk with the thinking counted only in the total.
        `signature_apart`: the first call's signature comes in a delta of its own after the
        calls (reported by open-webui/computer#224)."""
        calls = calls or []
        self.remember(thought, calls, text)
        frames = []
        thinking_tokens = 40
        usage = {"prompt_tokens": 30, "completion_tokens": 0, "total_tokens": 30 + thinking_tokens}
        for number, piece in enumerate(_pieces(thought)):
            content = ("<thought>" if number == 0 else "") + piece
            delta = {"role": "assistant", "content": content}
            delta["extra_content"] = {"google": {"thought": True}}
            frames.append(sse(chunk(delta, usage=dict(usage))))
        answer = text or ""
        if thought:
            answer = "</thought>" + answer
        for piece in _pieces(answer):
            usage["completion_tokens"] += 1
            usage["total_tokens"] += 1
            frames.append(sse(chunk({"role": "assistant", "content": piece}, usage=dict(usage))))
        for position, call in enumerate(calls):
            entry: dict[str, Any] = {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            signed: dict[str, Any] | None = None
            if position == 0:
                self.counter += 1
                signature = f"CiQB{self.counter:04d}sig-for-{call.id}"
                self.signatures[call.id] = signature
                signed = {"google": {"thought_signature": signature}}
                if not signature_apart:
                    entry["extra_content"] = signed
            usage["completion_tokens"] += 5
            usage["total_tokens"] += 5
            frames.append(
                sse(chunk({"role": "assistant", "tool_calls": [entry]}, usage=dict(usage)))
            )
            if signed is not None and signature_apart:
                apart = {"id": call.id, "extra_content": signed}
                frames.append(sse(chunk({"role": "assistant", "tool_calls": [apart]})))
        if not calls:
            # A text answer's signature comes on a delta of its own (not validated back).
            extra = {"google": {"thought_signature": "text-signature"}}
            frames.append(sse(chunk({"role": "assistant", "extra_content": extra})))
        frames.append(sse(chunk({"role": "assistant"}, "stop", usage=dict(usage))))
        frames.append(DONE)
        return Reply(frames)


# ---- MiniMax M2 (OpenAI-compatible, reasoning_split) ----------------------------------------

MINIMAX_DETAILS_LOST = (
    "strict fake: the assistant message at index {index} came back without the "
    "reasoning_details it was answered with; MiniMax's docs require the complete message, "
    "reasoning_details included, in every later turn (it degrades rather than refuses)"
)
MINIMAX_TEMPERATURE = "invalid params, temperature must be in (0, 1] (2013)"
MINIMAX_EMPTY_PARAMETERS = "invalid params, function parameters is empty (2013)"


def minimax_error(message: str) -> Refusal:
    return 400, {
        "type": "error",
        "error": {"type": "bad_request_error", "message": message, "http_code": "400"},
    }


@dataclass
class MiniMax(StrictProvider):
    """reasoning_split moves the thinking into reasoning_details (else <think> in content);
    each assistant message it answered must come back with those details, as they were."""

    # Whether streamed reasoning_details texts are growing snapshots (MiniMax's own example)
    # or increments (what M2.7 was reported to send).
    cumulative: bool = False
    details_of_call: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    details_of_text: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def check(self, body: dict[str, Any]) -> Refusal | None:
        temperature = body.get("temperature")
        if temperature is not None and not 0 < temperature <= 1:
            return minimax_error(MINIMAX_TEMPERATURE)
        if body.get("n", 1) != 1:
            return minimax_error("invalid params, n only supports 1 (2013)")
        for tool in body.get("tools") or ():
            if not tool["function"].get("parameters"):
                return minimax_error(MINIMAX_EMPTY_PARAMETERS)
        for index, message in enumerate(body["messages"]):
            if message["role"] != "assistant":
                continue
            expected = None
            for call in message.get("tool_calls") or ():
                expected = self.details_of_call.get(call["id"], expected)
            content = message.get("content")
            if expected is None and isinstance(content, str):
                expected = self.details_of_text.get(content)
            if expected is not None and message.get("reasoning_details") != expected:
                self.refused.append(f"message {index}: {message.get('reasoning_details')!r}")
                return minimax_error(MINIMAX_DETAILS_LOST.format(index=index))
        return None

    def turn(
        self,
        body: dict[str, Any],
        *,
        reasoning: str = "",
        calls: list[Call] | None = None,
        text: str | None = None,
    ) -> Reply:
        calls = calls or []
        self.remember(reasoning, calls, text)
        details = [
            {
                "type": "reasoning.text",
                "id": "reasoning-text-1",
                "format": "MiniMax-response-v1",
                "index": 0,
                "text": reasoning,
            }
        ]
        frames = []
        if body.get("reasoning_split") is True:
            for call in calls:
                self.details_of_call[call.id] = details
            if text:
                self.details_of_text[text] = details
            so_far = ""
            for piece in _pieces(reasoning):
                so_far += piece
                entry = {**details[0], "text": so_far if self.cumulative else piece}
                frames.append(sse(chunk({"role": "assistant", "reasoning_details": [entry]})))
            content = text or ""
        else:
            # Without the switch the thinking stays in content, to be kept there.
            content = f"<think>\n{reasoning}\n</think>\n\n{text or ''}"
        frames += [sse(chunk({"role": "assistant", "content": p})) for p in _pieces(content)]
        for index, call in enumerate(calls):
            entry = {
                "id": call.id,
                "type": "function",
                "index": index,
                "function": {"name": call.name, "arguments": call.arguments},
            }
            frames.append(sse(chunk({"role": "assistant", "tool_calls": [entry]})))
        frames.append(sse(chunk({}, "tool_calls" if calls else "stop")))
        frames.append(sse(_usage(25, 12)))
        frames.append(DONE)
        whole = completion_of(frames)
        if body.get("reasoning_split") is True:
            # Not streamed, the message carries the details whole (MiniMax's
            # OpenAI-compatible API page, its non-streaming example).
            whole["choices"][0]["message"]["reasoning_details"] = details
        return Reply(frames, whole=whole)


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-strict",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def arguments(**values: Any) -> str:
    return json.dumps(values)


def decode_error(payload: bytes) -> Any:
    return orjson.loads(payload)
