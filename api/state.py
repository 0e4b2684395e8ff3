"""Typed application state keys (aiohttp `AppKey`), shared by the handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web

from api.broadcast import Broadcaster
from api.gbplayer import GbPlayer
from api.metrics import Metrics
from api.ratelimit import RateLimiter
from api.tasks import BackgroundTasks
from camera_registry.config import Settings
from camera_registry.crypto import CredentialBox
from camera_registry.store.cameras import Registry
from camera_registry.store.gb28181 import GbDevices
from camera_registry.store.inbox import Inbox
from camera_registry.store.jobs import ImportJobs
from camera_registry.store.mapgrid import MapGrid
from camera_registry.store.streams import StreamLinks
from camera_registry.store.tokens import Tokens
from health.diagnosis import Thresholds
from health.worker import Worker
from ingest.gb28181.server import SipServer

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
BOX = web.AppKey("box", CredentialBox)
REGISTRY = web.AppKey("registry", Registry)
TOKENS = web.AppKey("tokens", Tokens)
JOBS = web.AppKey("jobs", ImportJobs)
METRICS = web.AppKey("metrics", Metrics)
BACKGROUND = web.AppKey("background", BackgroundTasks)
IMPORT_SLOTS = web.AppKey("import_slots", asyncio.Semaphore)
STREAMS = web.AppKey("streams", StreamLinks)
LIMITER = web.AppKey("limiter", RateLimiter)
WORKER = web.AppKey("worker", Worker)
THRESHOLDS = web.AppKey("diagnosis_thresholds", Thresholds)
INBOX = web.AppKey("inbox", Inbox)
EVENTS = web.AppKey("events", Broadcaster)
MAPGRID = web.AppKey("mapgrid", MapGrid)
OPENAPI = web.AppKey("openapi", dict[str, Any])
SIP = web.AppKey("sip", SipServer)
GB_DEVICES = web.AppKey("gb_devices", GbDevices)
GB_PLAYER = web.AppKey("gb_player", GbPlayer)
