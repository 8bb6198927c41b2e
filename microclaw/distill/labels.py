"""The router's label set and the strict schema a teacher's answer must satisfy.

Three heads: ``intent`` (what the utterance asks for), ``route`` (where it is handled: on the
device, by the host's agent, or as the answer to a pending confirmation) and ``confirm`` (the
answer itself). ``route`` follows from ``intent`` (`ROUTE_OF`); a label that contradicts it is
malformed. The order of each tuple is the order of the model's output logits: changing it
changes the model's label map, so it is part of `LABEL_SET_VERSION`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, model_validator

LABEL_SET_VERSION = "router-v1"

Intent = Literal[
    "timer_set",  # "set a timer for ten minutes"
    "timer_cancel",  # "cancel the timer"
    "timer_query",  # "how long is left on the timer"
    "volume_up",  # "louder"
    "volume_down",  # "turn it down"
    "volume_set",  # "set the volume to 5"
    "mute",  # "mute"
    "stop",  # "stop", "be quiet" (stops what the device is doing: speech, alarm, playback)
    "time",  # "what time is it"
    "confirm",  # "yes", "no way", "never mind": the answer to a question the device asked
    "agent",  # anything else: sent to the host's agent
]
Route = Literal["device", "host", "confirm"]
Confirm = Literal["yes", "no", "cancel", "none"]

INTENTS: tuple[str, ...] = get_args(Intent)
ROUTES: tuple[str, ...] = get_args(Route)
CONFIRMS: tuple[str, ...] = get_args(Confirm)
HEADS: dict[str, tuple[str, ...]] = {"intent": INTENTS, "route": ROUTES, "confirm": CONFIRMS}

ROUTE_OF: dict[str, str] = {
    intent: ("host" if intent == "agent" else "confirm" if intent == "confirm" else "device")
    for intent in INTENTS
}


class RouterLabel(BaseModel):
    """One utterance's label as a teacher must give it (extra keys are malformed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intent: Intent
    route: Route
    confirm: Confirm

    @model_validator(mode="after")
    def _consistent(self) -> RouterLabel:
        if ROUTE_OF[self.intent] != self.route:
            raise ValueError(
                f"intent {self.intent!r} is routed to {ROUTE_OF[self.intent]!r}, not {self.route!r}"
            )
        if (self.intent == "confirm") != (self.confirm != "none"):
            raise ValueError("confirm is yes/no/cancel exactly when intent is 'confirm', else 'none'")
        return self


class BatchItem(RouterLabel):
    index: int


class LabelBatch(BaseModel):
    """The teacher's tool input: one label per numbered utterance."""

    model_config = ConfigDict(extra="forbid")

    labels: list[dict[str, Any]]


def tool_schema() -> dict[str, Any]:
    """The JSON schema of the ``label_utterances`` tool (neutral provider format)."""
    item = {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "description": "the utterance's number"},
            "intent": {"type": "string", "enum": list(INTENTS)},
            "route": {"type": "string", "enum": list(ROUTES)},
            "confirm": {"type": "string", "enum": list(CONFIRMS)},
        },
        "required": ["index", "intent", "route", "confirm"],
        "additionalProperties": False,
    }
    return {
        "name": "label_utterances",
        "description": "Record the label of every numbered utterance.",
        "input_schema": {
            "type": "object",
            "properties": {"labels": {"type": "array", "items": item}},
            "required": ["labels"],
            "additionalProperties": False,
        },
    }


def label_map() -> dict[str, list[str]]:
    """Head -> class names in logit order (shipped in the bundle's manifest)."""
    return {head: list(names) for head, names in HEADS.items()}
