"""The load generator behind `locust -f loadtest`: options, Locust plugin and user, HTTP transport, response
parsing and classification, arrival schedules, receive stamps, prompts, token counting, images. Writes run
folders through `runfolder`.

Scenario files import `loadgen.user`, which registers the event listeners of `plugin`.
This package file imports nothing, so `loadgen.options` and the Locust-free modules import without Locust.
"""
