"""Simulators of the collector's outside peers (Google's Admin API), over HTTP on loopback, for
tests and demos. They need aiohttp, which the collector has."""
