"""Services the tests start themselves, and hypothesis profiles."""

import os

from hypothesis import settings

pytest_plugins = [
    "tests.services.activemq",
    "tests.services.icat_mocks",
    "tests.services.tango_db",
]

# CI replays the same examples on every run, so that a landing never hangs on a lucky draw;
# a developer's run explores new ones (and keeps what failed in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
