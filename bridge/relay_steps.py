"""A read's upstream events through the translator, a step of the event loop at a time:
the answer's size counted against its limit, runs of plain text taken in as one, and the
events they make sent (bridge.relay runs it for each read of a stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec

from bridge.errors import ApiError
from bridge.sse import SSEEvent
from bridge.translate.stream import StreamTranslator
from bridge.wire.chat import CHUNK_DECODER, ChatChunk
from bridge.wire.events import ResponseEvent

# Runs `produce` (which numbers events) and writes what it returns, under the turn's one
# lock: events leave in the order they were numbered (bridge.emitter.Emitter.send).
Send = Callable[[Callable[[], list[ResponseEvent]]], Awaitable[None]]

_DONE = b"[DONE]"
# Upstream events translated in one step of the event loop before the relay yields: a fast
# upstream's read holds hundreds, and translating whole reads of many streams in one loop
# iteration kept other streams' first deltas waiting. bench/run.py fast-16 (uvloop): whole
# reads 24-25 ms first-delta p50; 64, 128 and 256 events a step 15-18 ms, but 64 cost 5-10%
# of tokens/s and CPU per token (a write per step), 128 and 256 nothing measurable.
STEP_EVENTS = 128


def malformed(detail: str) -> ApiError:
    return ApiError.server(f"upstream sent a malformed stream chunk: {detail}")


class Steps:
    """Counts upstream events translated since the relay last let other tasks run; reads
    already buffered are taken without a pause, so the count goes across reads."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events = 0

    async def took(self, events: int) -> None:
        """Count `events` translated; yield to the loop once a step's worth is done."""
        self.events += events
        if self.events >= STEP_EVENTS:
            self.events = 0
            await asyncio.sleep(0)


class AnswerBudget:
    """What is left of `[upstream] max_answer_bytes` for a streamed answer: its text,
    reasoning and tool calls (what the bridge keeps of it), counted in characters."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, chunk: ChatChunk) -> None:
        """Count a chunk's answer; ApiError once the answer is past the limit."""
        used = self.used
        for choice in chunk.choices:
            delta = choice.delta
            if delta is None:
                continue
            # Field by field: this runs for every chunk of every stream.
            if delta.content:
                used += len(delta.content)
            if delta.reasoning_content:
                used += len(delta.reasoning_content)
            if delta.reasoning:
                used += len(delta.reasoning)
            if delta.refusal:
                used += len(delta.refusal)
            if delta.tool_calls:
                for call in delta.tool_calls:
                    if call.function is not None:
                        used += len(call.function.name or "") + len(call.function.arguments or "")
            if delta.reasoning_details:
                for details in delta.reasoning_details:
                    used += sum(len(v) for v in details.values() if isinstance(v, str))
        self.used = used
        if used > self.limit:
            raise self._over()

    def spend_text(self, text: str) -> None:
        """Count the content of a chunk that holds only content (spend, for most chunks)."""
        self.used += len(text)
        if self.used > self.limit:
            raise self._over()

    def _over(self) -> ApiError:
        return ApiError.server(
            f"the provider's answer passed {self.limit} bytes ([upstream] "
            "max_answer_bytes) and was cut off there: the bridge closed the stream"
        )


async def forward(
    events: list[SSEEvent],
    translator: StreamTranslator,
    send: Send,
    budget: AnswerBudget | None = None,
    steps: Steps | None = None,
) -> tuple[bool, ApiError | None]:
    """Translate one upstream read and send what it produced, at most STEP_EVENTS events
    per step of the loop; whether [DONE] came, and the error that ended the stream."""
    start = 0
    done = False
    error: ApiError | None = None
    while start < len(events) and not done and error is None:
        begun = start

        def produce() -> list[ResponseEvent]:
            nonlocal start, done, error
            stop = min(len(events), start + STEP_EVENTS - (steps.events if steps else 0))
            produced, done, error, start = translate(events, translator, start, stop, budget)
            return produced

        await send(produce)
        if steps is not None and not done and error is None:
            await steps.took(start - begun)
    return done, error


def translate(
    events: list[SSEEvent],
    translator: StreamTranslator,
    start: int,
    stop: int,
    budget: AnswerBudget | None = None,
) -> tuple[list[ResponseEvent], bool, ApiError | None, int]:
    """Responses events for upstream events from `start` to `stop`; whether [DONE] came;
    the error that ended it; where to go on from.

    The events are taken together, so consecutive text deltas leave as one event, except
    that the answer's first output leaves at once (time to first token). Events produced
    before an error are still returned, so sequence numbers stay gapless.
    """
    first_output = not translator.produced_output
    done = False
    error: ApiError | None = None
    index = start
    # The text of consecutive chunks that hold nothing else, taken in as one chunk: their
    # events would leave as one delta anyway, and the translator's work is per chunk.
    texts: list[str] = []
    while index < stop:
        data = events[index].data
        index += 1
        if data == _DONE:
            done = True
            break
        try:
            chunk = CHUNK_DECODER.decode(data)
            text = None if first_output else _only_text(chunk)
            if text is not None:
                if budget is not None:
                    budget.spend_text(text)
                texts.append(text)
                continue
            if budget is not None:
                budget.spend(chunk)
            if texts:
                translator.add_text(_joined(texts))
            translator.add(chunk)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            error = malformed(str(exc))
            break
        except ApiError as exc:
            error = exc
            break
        if first_output and translator.produced_output:
            break
    if texts:
        text = _joined(texts)
        produced = translator.text_now(text)
        if produced is not None:
            return produced, done, error, index
        try:
            translator.add_text(text)
        except ApiError as exc:
            error = error or exc
    return translator.take(), done, error, index


def _only_text(chunk: ChatChunk) -> str | None:
    """The content of a chunk that carries content and nothing else (most of a stream),
    else None."""
    if chunk.usage is not None or chunk.error is not None or len(chunk.choices) != 1:
        return None
    choice = chunk.choices[0]
    delta = choice.delta
    if (
        delta is None
        or not delta.content
        or choice.index not in (0, None)
        or choice.finish_reason
        or choice.usage is not None
        or delta.reasoning_content
        or delta.reasoning
        or delta.reasoning_details
        or delta.tool_calls
        or delta.refusal
        or delta.extra_content
    ):
        return None
    return delta.content


def _joined(texts: list[str]) -> str:
    """The text of several chunks as one (emptying `texts`)."""
    text = texts[0] if len(texts) == 1 else "".join(texts)
    texts.clear()
    return text
