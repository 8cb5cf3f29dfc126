"""Settings for the config-poll benchmark only: the real settings, plus a URLconf that adds
`/bench/bare` (a constant-bytes view to compare against). Never used outside tests/bench."""
from controlplane.settings import *  # noqa: F403

ROOT_URLCONF = "tests.bench.bench_urls"
