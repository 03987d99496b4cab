"""Locust integration of the load test (imports locust and gevent; `benchcore` itself does not).

Scenario files import `benchcore.loadgen.user`, which registers the event listeners of `plugin`.
This package file imports nothing, so `benchcore.loadgen.options` stays importable without Locust.
"""
