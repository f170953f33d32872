"""Typed keys for what the application holds."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from bridge.config import Config
from bridge.store import Store
from bridge.upstream import UpstreamClient

CONFIG = web.AppKey("config", Config)
API_KEYS = web.AppKey("api_keys", dict[str, str])
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
UPSTREAMS = web.AppKey("upstreams", dict[str, UpstreamClient])
STORE = web.AppKey("store", Store)
STORE_PATH = web.AppKey("store_path", Path)

# Per request: the id of the response it created, for the access log.
RESPONSE_ID = web.RequestKey("response_id", str)
# Per request: how the response ended (completed, incomplete, failed), once it has.
OUTCOME = web.RequestKey("outcome", str)
