"""Typed keys for what the application holds."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from bridge.background import BackgroundRuns
from bridge.bodies import BodyBudget, Share
from bridge.collector import CollectorPause
from bridge.config import Config
from bridge.metrics import Metrics
from bridge.request_log import RequestLog
from bridge.store.protocol import Store
from bridge.turn_trace import TurnRing
from bridge.turns import TurnsInFlight
from bridge.upstream import UpstreamClient

CONFIG = web.AppKey("config", Config)
API_KEYS = web.AppKey("api_keys", dict[str, str])
# Providers whose key variable is unset where the bridge runs (the demo mode, bridge.demo).
MISSING_KEYS = web.AppKey("missing_keys", frozenset[str])
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
UPSTREAMS = web.AppKey("upstreams", dict[str, UpstreamClient])
STORE: web.AppKey[Store] = web.AppKey("store")
TURNS = web.AppKey("turns", TurnsInFlight)
STORE_PATH = web.AppKey("store_path", Path)
BACKGROUND = web.AppKey("background", BackgroundRuns)
# The request bodies held by the requests being answered (bridge.bodies).
BODIES = web.AppKey("bodies", BodyBudget)
# Garbage collection paused while very large requests are served (bridge.collector).
COLLECTOR = web.AppKey("collector", CollectorPause)
# The last turns kept whole for GET /debug/turns ([debug] keep_turns).
DEBUG_TURNS = web.AppKey("debug_turns", TurnRing)
METRICS = web.AppKey("metrics", Metrics)

# The address the bridge listens on (the Host check allows it: bridge.browsers).
LISTEN_HOST = web.AppKey("listen_host", str)
# Client keys the bridge accepts (empty: no client authentication).
CLIENT_KEYS = web.AppKey("client_keys", tuple[str, ...])
# Per request: who the client is, for scoping stored conversations (bridge.scope).
CLIENT = web.RequestKey("client", str)
# Per request: its share of the body budget (bridge.bodies).
BODY_SHARE = web.RequestKey("body_share", Share)
# Per request: the Origin of an allowed web page, answered with CORS headers.
ALLOWED_ORIGIN = web.RequestKey("allowed_origin", str)
# Per request: what its access log line says (bridge.access.RequestLog).
REQUEST_LOG = web.RequestKey("request_log", RequestLog)
