"""agenthub: one open control plane for fleets of AI agents and the machines they run on."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agenthub")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
