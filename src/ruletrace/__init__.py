"""ruletrace: where did my packet go, and which rule did that?"""

from .errors import RuletraceError
from .model import (
    Chain,
    Explanation,
    Fate,
    Origin,
    Packet,
    Rule,
    Ruleset,
    Step,
    StepKind,
    TraceEvent,
    Verdict,
)

__version__ = "0.1.0"

__all__ = [
    "Chain",
    "Explanation",
    "Fate",
    "Origin",
    "Packet",
    "Rule",
    "Ruleset",
    "RuletraceError",
    "Step",
    "StepKind",
    "TraceEvent",
    "Verdict",
    "__version__",
]
