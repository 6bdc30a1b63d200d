"""The configuration: every option in one table (`options`), loading it from the file, the
environment and flags (`load`), and the policy in force with the policy object laid over it
(`settings`). Its public names are here."""

from rrwatch.config.loader import (
    DEFAULT_FILE,
    FILE_ENV,
    FILE_LIMIT,
    Config,
    Timing,
    bird_directory_warning,
    load,
    read_file,
    tls_problems,
)
from rrwatch.config.options import BY_KEY, LIMIT_FIELDS, OPTIONS, POLICY_FIELDS, Option, text_of
from rrwatch.config.settings import (
    LOCAL_ONLY,
    OBJECT_KEYS,
    Settings,
    adoption_problem,
    describe,
    exclusion_problem,
    overlay,
)

__all__ = [
    "BY_KEY", "Config", "DEFAULT_FILE", "FILE_ENV", "FILE_LIMIT", "LIMIT_FIELDS", "LOCAL_ONLY",
    "OBJECT_KEYS", "OPTIONS", "Option", "POLICY_FIELDS", "Settings", "Timing", "adoption_problem",
    "bird_directory_warning", "describe", "exclusion_problem", "load", "overlay", "read_file",
    "text_of", "tls_problems",
]
