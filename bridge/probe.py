"""`check-config --probe`: one tiny request to each configured provider.

It answers what a first request would otherwise find out the hard way: whether the provider
is reachable, whether it takes the key, whether it knows the model, and whether the model
streams reasoning (what the bridge stores and replays). The request is the one the bridge
would send for a short question with low reasoning effort, shaped by the provider's profile;
reading stops at the first reasoning or answer text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import msgspec

from bridge.body import UpstreamBody
from bridge.config import Config
from bridge.errors import ApiError
from bridge.providers import PROFILES, shape_body
from bridge.sse import SSEParser, SSEProtocolError
from bridge.upstream import UpstreamClient, connection_error
from bridge.wire.chat import CHUNK_DECODER, ChatMessage

# The longest a probe of one provider may take, answer included.
PROBE_SECONDS = 30.0
# Bytes of a stream read at most before giving up on seeing text.
PROBE_BYTES = 256 * 1024
QUESTION = "Reply with the word OK."


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one provider's probe found."""

    provider: str
    model: str
    where: str
    ok: bool
    said: str
    seconds: float = 0.0

    def line(self) -> str:
        state = "ok" if self.ok else "FAILED"
        timing = f" in {self.seconds:.1f}s" if self.seconds else ""
        return f"{self.provider} ({self.where}, model {self.model}): {state}{timing}: {self.said}"


def _body(config: Config, provider_name: str, upstream_model: str) -> UpstreamBody:
    provider = config.providers[provider_name]
    body = {
        "model": upstream_model,
        "messages": [ChatMessage(role="user", content=QUESTION)],
        "stream": True,
        "max_tokens": 64,
    }
    shape_body(
        body,
        PROFILES[provider.profile],
        "low",
        extra_body=provider.extra_body,
        drop_params=provider.drop_params,
        max_tokens_param=provider.max_tokens_param,
    )
    return UpstreamBody.of(msgspec.json.encode(body))


async def _read(response: aiohttp.ClientResponse, upstream: UpstreamClient) -> str:
    """What the stream shows first: reasoning, or an answer without it."""
    parser = SSEParser(max_event_bytes=upstream.max_event_bytes)
    seen = 0
    async for data in response.content.iter_any():
        seen += len(data)
        for event in parser.feed(data):
            if event.data == b"[DONE]":
                return "the stream ended without text"
            chunk = CHUNK_DECODER.decode(event.data)
            if chunk.error is not None:
                return f"the stream carried an error: {chunk.error.message}"
            for choice in chunk.choices:
                delta = choice.delta
                if delta is None:
                    continue
                if delta.reasoning_content:
                    return "answers, and streams reasoning (reasoning_content)"
                if delta.reasoning:
                    return "answers, and streams reasoning (reasoning)"
                if delta.content or delta.tool_calls:
                    return (
                        "answers, without streaming reasoning (the model does not think, or "
                        "thinking is off)"
                    )
        if seen > PROBE_BYTES:
            break
    return "the stream ended without text"


async def probe_provider(
    config: Config,
    session: aiohttp.ClientSession,
    provider_name: str,
    model: str,
    api_key: str | None,
) -> ProbeResult:
    """One request to one provider, with the first model that uses it."""
    provider = config.providers[provider_name]
    upstream_model = config.upstream_model(model)
    upstream = UpstreamClient(session, provider_name, provider, api_key, config.upstream)
    where = upstream.display_url
    started = time.monotonic()
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            async with upstream.stream(_body(config, provider_name, upstream_model)) as response:
                if response.content_type == "application/json":
                    said = "answers, but as one JSON body: it ignores stream: true"
                else:
                    said = await _read(response, upstream)
    except TimeoutError:
        return ProbeResult(
            provider_name, upstream_model, where, False, f"no answer in {PROBE_SECONDS:g}s"
        )
    except ApiError as exc:
        return ProbeResult(
            provider_name, upstream_model, where, False, exc.message, time.monotonic() - started
        )
    except aiohttp.ClientError as exc:
        error = connection_error(exc, where)
        return ProbeResult(provider_name, upstream_model, where, False, error.message)
    except (SSEProtocolError, msgspec.DecodeError) as exc:
        return ProbeResult(
            provider_name, upstream_model, where, False, f"a malformed stream: {exc}"
        )
    ok = said.startswith("answers")
    return ProbeResult(provider_name, upstream_model, where, ok, said, time.monotonic() - started)


async def probe_all(config: Config, environ: Mapping[str, str]) -> list[ProbeResult]:
    """Every provider some model uses, probed at once (in the order the config names them)."""
    first_model: dict[str, str] = {}
    for name, settings in config.models.items():
        first_model.setdefault(settings.provider, name)
    results: list[ProbeResult | None] = []
    probes: list[tuple[int, str, str, str | None]] = []
    for provider_name, model in first_model.items():
        provider = config.providers[provider_name]
        if provider.profile == "demo":
            results.append(
                ProbeResult(
                    provider_name, model, "built in", True, "the demo model: nothing to ask"
                )
            )
            continue
        key = environ.get(provider.api_key_env) if provider.api_key_env else None
        if provider.api_key_env and not key:
            results.append(
                ProbeResult(
                    provider_name,
                    config.upstream_model(model),
                    provider.base_url,
                    False,
                    f"not probed: {provider.api_key_env} is not set here",
                )
            )
            continue
        probes.append((len(results), provider_name, model, key))
        results.append(None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        done = await asyncio.gather(
            *(probe_provider(config, session, name, model, key) for _, name, model, key in probes)
        )
    for (index, *_), result in zip(probes, done, strict=True):
        results[index] = result
    return [result for result in results if result is not None]
