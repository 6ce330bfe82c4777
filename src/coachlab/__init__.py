"""coachlab: a strong LLM coaches a small self-hosted LLM to be a better customer-service agent.

The simulation core: personas and scenarios (`coachlab.schema`), the models layer
(`coachlab.llm`), the agents (`coachlab.agents`), the episode environment
(`coachlab.environments`) and the experiment runners (`coachlab.experiments`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("coachlab")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
