"""Typed application state: every shared object lives under one of these keys."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from tice_collector.auth import RateLimiter, TokenCache
from tice_collector.metrics import Metrics
from tice_collector.settings import Settings
from tice_collector.writer import Writer

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
POOL = web.AppKey("pool", asyncpg.Pool)
WRITER = web.AppKey("writer", Writer)
TOKENS = web.AppKey("tokens", TokenCache)
LIMITER = web.AppKey("limiter", RateLimiter)  # per device, on /reports
ENROLL_BY_ADDRESS = web.AppKey("enroll_by_address", RateLimiter)
ENROLL_BY_SECRET = web.AppKey("enroll_by_secret", RateLimiter)
SCHEDULER = web.AppKey("scheduler", Any)  # apscheduler AsyncIOScheduler, imported lazily
