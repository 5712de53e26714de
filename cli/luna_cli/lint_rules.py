"""The rule codes of `luna-plugins lint`: one per kind of finding, stable across releases.

``LP1xx`` are errors (the operator would refuse the plugin), ``LW2xx`` warnings (it may fail at
load time). The operator's own problems are sorted into codes by :func:`operator_rule`, from the
start of its messages, which its tests fix.
"""

from __future__ import annotations

RULES: dict[str, str] = {
    "LP100": "the file cannot be read as plugin code (missing, unreadable, not UTF-8)",
    "LP101": "the file name is not a usable module name",
    "LP102": "syntax error",
    "LP103": "the code is too large or too deeply nested to parse",
    "LP104": "no plugin class",
    "LP105": "a plugin's eventName is not an event the service sends",
    "LP106": "the code is larger than a ConfigMap holds",
    "LP107": "the code could not be checked",
    "LP110": "a requirement the operator would refuse (spec.requirements)",
    "LP199": "another problem the operator would refuse",
    "LW201": "an import the sidecar image lacks and the requirements do not provide",
}

#: (start of the operator's message, rule), first match wins
_OPERATOR_MESSAGES: tuple[tuple[str, str], ...] = (
    ("module ", "LP101"),
    ("syntax error", "LP102"),
    ("the code is ", "LP103"),
    ("the code cannot be parsed", "LP103"),
    ("no plugin class", "LP104"),
    ("code is ", "LP106"),
    ("the code could not be checked", "LP107"),
)


def operator_rule(message: str) -> str:
    """The rule of one of the operator's problems with the code or the module name."""
    for start, rule in _OPERATOR_MESSAGES:
        if message.startswith(start):
            return rule
    if ".eventName is " in message:
        return "LP105"
    return "LP199"
