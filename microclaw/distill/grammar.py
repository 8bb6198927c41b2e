"""The synthetic grammar: templates x slot values per intent, with phrasings held out for test.

A template is a small pattern language: ``(a|b)`` picks one alternative, ``[x]`` is optional,
``{slot}`` takes a value from `SLOTS`. Each intent has ``train`` templates and ``test`` templates;
the test split is made only of held-out templates filled with held-out slot values, so its
accuracy measures phrasings the model never saw. Every utterance carries the label the grammar
intends (``expected``); the teacher's label is the one trained on, and disagreements are counted
in the dataset card. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from microclaw.distill.labels import ROUTE_OF, RouterLabel

# slot -> (train values, held-out test values)
SLOTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dur": (
        (
            "ten minutes",
            "5 minutes",
            "one hour",
            "30 seconds",
            "two minutes",
            "an hour and a half",
            "15 min",
            "3 minutes",
            "twenty minutes",
            "45 seconds",
            "1 hour",
            "half an hour",
            "90 seconds",
            "eight minutes",
            "12 minutes",
            "four hours",
        ),
        (
            "seven minutes",
            "25 minutes",
            "two hours",
            "a minute",
            "40 seconds",
            "six min",
            "quarter of an hour",
        ),
    ),
    "level": (
        ("5", "ten", "three", "50 percent", "seven", "max", "2", "eighty percent", "level 4"),
        ("six", "8", "30 percent", "nine", "level two"),
    ),
    "thing": (
        ("pasta", "the eggs", "the oven", "tea", "the laundry", "pizza", "rice", "my nap", "the bread"),
        ("the cookies", "coffee", "the roast", "homework"),
    ),
    "topic": (
        (
            "the weather tomorrow",
            "my emails",
            "the news",
            "bitcoin",
            "the football scores",
            "my calendar",
            "the traffic",
            "quantum computing",
            "the french revolution",
            "my meetings",
            "the stock market",
            "a good recipe for lasagna",
            "flights to rome",
            "the election",
            "my unread messages",
            "the population of canada",
            "how vaccines work",
        ),
        (
            "the weather this weekend",
            "my inbox",
            "the train schedule",
            "black holes",
            "dinner ideas",
            "the opening hours of the pharmacy",
        ),
    ),
    "person": (
        ("mom", "alice", "my boss", "the dentist", "bob", "grandma", "the team"),
        ("dad", "carol", "my landlord", "the plumber"),
    ),
    "place": (
        ("tokyo", "london", "new york", "paris", "sydney"),
        ("berlin", "chicago", "delhi"),
    ),
}

_POLITE_PRE = "[(please|hey|ok|could you|can you|would you) ]"
_POLITE_POST = "[ (please|thanks|thank you|now)]"

# intent -> (train templates, held-out test templates)
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "timer_set": (
        (
            _POLITE_PRE + "(set|start) a [new ](timer|countdown) for {dur}" + _POLITE_POST,
            _POLITE_PRE + "set [a ]timer {dur}",
            "timer {dur}",
            "{dur} timer",
            _POLITE_PRE + "(time|set a timer for) {thing} for {dur}",
            "(remind|alert) me in {dur}",
            "countdown {dur}",
            "start (the|a) clock for {dur}",
            "i need a timer for {dur}",
            "wake me (in|after) {dur}",
            "(ping|notify|tell) me when {dur} (have passed|is over|are over)",
            "let me know in {dur}",
            "(make|create) a {dur} countdown",
        ),
        (
            "(put|make) a timer (on|for) {dur}" + _POLITE_POST,
            "can i get a {dur} timer",
            "start counting down {dur}",
            "let me know when {dur} (are|is) up",
            "timer for {thing} {dur}",
            "set me a timer for {dur}",
            "please start a {dur} countdown",
            "countdown for {dur} please",
        ),
    ),
    "timer_cancel": (
        (
            _POLITE_PRE + "(cancel|delete|remove|clear) the timer" + _POLITE_POST,
            "(cancel|stop|kill) [the ]countdown",
            "(turn off|stop) the timer",
            "i don't need the timer anymore",
            "(cancel|delete) (my|all) timers",
            "timer off",
            "(cancel|scrap) the {thing} timer",
            "get rid of (the countdown|my timers)",
            "(drop|abort) (the|my) countdown",
            "no more (countdown|timers)",
        ),
        (
            "get rid of the timer",
            "(drop|abort) the timer",
            "no more timer" + _POLITE_POST,
            "switch off the countdown",
            "please cancel my timer",
            "stop the countdown now",
            "turn the timer off",
        ),
    ),
    "timer_query": (
        (
            "how (much|long) (time is|is) left on the timer",
            "how long (until|till) the timer (goes off|rings|is done)",
            "(check|what's) the timer",
            "how much time (is left|do i have left|remains)",
            "what's left on the {thing} timer",
            "is the timer (still running|done)",
            "how many (seconds|minutes) (remain|are remaining) on the timer",
            "(minutes|time) left on the {thing} timer",
            "when (is|will) the timer (be done|finish)",
        ),
        (
            "how many minutes are left",
            "time remaining on the timer",
            "how far along is the timer",
            "when will the timer (ring|go off)",
            "how much longer on the timer",
            "time left on my timer",
        ),
    ),
    "volume_up": (
        (
            _POLITE_PRE + "(turn|crank) (it|the volume|the sound) up" + _POLITE_POST,
            _POLITE_PRE + "(increase|raise) the volume" + _POLITE_POST,
            "(louder|volume up)" + _POLITE_POST,
            "(a bit|a little|much) louder",
            "i can't hear (you|that|it)",
            "make it louder",
            "speak up",
            "(boost|raise|bump up) the sound",
            "(boost|bump up|pump up) the volume",
            "more (sound|volume) (please|now)",
            "(it's|that's) too quiet",
            "you're not loud enough",
        ),
        (
            "pump up the volume",
            "(bump|boost) the sound",
            "more volume" + _POLITE_POST,
            "(you are|you're) too quiet",
            "turn up the volume please",
            "can you make it louder",
            "raise the sound a bit",
        ),
    ),
    "volume_down": (
        (
            _POLITE_PRE + "(turn|bring) (it|the volume|the sound) down" + _POLITE_POST,
            _POLITE_PRE + "(decrease|lower|reduce) the volume" + _POLITE_POST,
            "(quieter|volume down|softer)" + _POLITE_POST,
            "(a bit|a little|much) (quieter|softer)",
            "(it's|that's|you're) too loud",
            "make it quieter",
            "(not that|don't be so) loud",
            "(cut|drop) the sound",
            "less (sound|loud)",
            "tone down the volume",
        ),
        (
            "not so loud",
            "(drop|cut) the volume",
            "less volume" + _POLITE_POST,
            "tone it down",
            "turn down the volume please",
            "can you make it quieter",
            "lower the sound a bit",
        ),
    ),
    "volume_set": (
        (
            _POLITE_PRE + "set [the ]volume to {level}" + _POLITE_POST,
            "volume {level}",
            "(change|put) the volume (to|at) {level}",
            "(make|turn) the volume {level}",
            "volume (to|at) {level}",
            "(sound|volume) (to|at) {level}",
            "(sound|volume) level (to )?{level}",
            "(set|change) the sound level (to|at) {level}",
            "(adjust|put) the (volume|sound) (to|at) {level}",
        ),
        (
            "i want the volume at {level}",
            "adjust volume to {level}",
            "sound level {level}",
            "please put volume at {level}",
            "change volume to {level}",
        ),
    ),
    "mute": (
        (
            _POLITE_PRE + "mute" + _POLITE_POST,
            "mute (yourself|the sound|the speaker|audio)",
            "(turn|switch) off the sound",
            "sound off",
            "silence the speaker",
            "kill the (audio|speaker)",
            "(go|switch to) mute",
            "mute (the tv|all|the sound now)",
            "silent mode",
        ),
        (
            "go silent",
            "mute (it|everything)",
            "kill the sound",
            "please mute the speaker",
            "switch the sound off",
        ),
    ),
    "stop": (
        (
            _POLITE_PRE + "stop" + _POLITE_POST,
            "stop (talking|it|that|the alarm|the music|playing)",
            "(shut up|be quiet|quiet)",
            "enough",
            "(halt|pause)",
            "stop (the|that) (noise|alarm|ringing)",
            "(turn off|silence) the alarm",
            "(hush|shh)",
            "(stop|quit) (it|that) right (now|away)",
            "(end|finish) (the|that) (noise|alarm)",
            "that is enough",
        ),
        (
            "stop (right there|speaking)",
            "that's enough" + _POLITE_POST,
            "(hush|shush)",
            "end the alarm",
            "stop stop stop",
            "please be quiet now",
            "stop the music please",
        ),
    ),
    "time": (
        (
            _POLITE_PRE + "what time is it" + _POLITE_POST,
            "what's the time",
            "(tell me|say) the time",
            "(current|the) time" + _POLITE_POST,
            "what time is it (now|right now)",
            "do you know what time it is",
            "time check",
            "do you have the time",
            "give me the [current ]time",
            "what is the [current ]time (now|please)",
        ),
        (
            "what is the time",
            "have you got the time",
            "what's the current time",
            "give me the time",
            "what time is it please",
            "can you tell me the time",
            "tell me what time it is",
        ),
    ),
    "confirm_yes": (
        (
            "(yes|yeah|yep|yup|sure|ok|okay|correct|right|absolutely|definitely|of course)",
            "(yes|yeah|sure|ok) (please|go ahead|do it)",
            "(go ahead|do it|please do|proceed|confirm|confirmed)",
            "(that's|that is) (right|correct|fine)",
            "sounds good",
            "yes (that's|it's) (right|fine)",
            "(sure|yes) (thing|do it)",
            "(fine|all right) (go ahead|by me)",
            "go for it",
        ),
        (
            "sure thing",
            "(yep|okay) go (for it|ahead)",
            "(alright|all right)",
            "yes do that",
            "of course go ahead",
            "yes go ahead please",
            "ok do it",
            "yeah sure",
        ),
    ),
    "confirm_no": (
        (
            "(no|nope|nah|negative)",
            "no (thanks|thank you|way)",
            "(don't|do not) (do it|do that)",
            "(not now|not yet|i don't think so)",
            "no (that's|it's) (wrong|not right)",
            "(that's|that is) (wrong|incorrect)",
            "(definitely|certainly) not",
            "(nah|no) (not today|don't bother)",
            "(better|please) don't",
        ),
        (
            "no no",
            "(nope|nah) (don't|not now)",
            "definitely not",
            "better not",
            "no please don't",
            "nope not now",
            "no i don't want that",
        ),
    ),
    "confirm_cancel": (
        (
            "(cancel|never mind|nevermind|forget it|abort)",
            "(cancel|forget) (that|it|this)",
            "(scratch|drop) that",
            "forget (about )?it",
            "(cancel|abort) (the request|the whole thing)",
            "never mind (it|the request)",
            "(cancel|drop) (everything|it all)",
            "let's (forget|cancel) it",
        ),
        (
            "never mind (that|then)",
            "forget the whole thing",
            "cancel everything",
            "let's drop it",
            "cancel it please",
            "never mind forget it",
            "abort that",
        ),
    ),
    "agent": (
        (
            _POLITE_PRE + "(tell me about|search for|look up|find) {topic}" + _POLITE_POST,
            "what's (new with|happening with) {topic}",
            "(summarize|read) {topic}",
            "(send|write) (a message|an email|a text) to {person}[ saying i'm late]",
            "(call|text|email) {person}",
            "remind me to call {person} (tomorrow|tonight|at noon)",
            "(add|put) {thing} on my shopping list",
            "what time is it in {place}",
            "what's the weather (in|like in) {place}",
            "how do i (make|cook) {thing}",
            "how long (do i|should i) (cook|bake|boil) {thing}",
            "(set|book) a meeting with {person} (tomorrow|next week)",
            "(who|what) (is|was) {topic}",
            "translate (hello|good morning|thank you) (to|into) (french|spanish|german)",
            "what's on my calendar (today|tomorrow)",
            "(play|put on) (some jazz|my playlist|the radio)",
            "write a (poem|story|haiku) about {thing}",
            "(how|why) (does|do) {topic} work",
            "(schedule|plan) (dinner|lunch) with {person}",
            "(cancel|move) my (meeting|appointment) with {person}",
            "is it going to rain (today|tomorrow) in {place}",
            "what's (two plus two|the square root of 144|15 percent of 80)",
            "(order|buy) more {thing}",
            "how far is {place}",
            "turn on the (lights|heating) in the (kitchen|living room)",
            "stop the (subscription|newsletter) from {person}",
            "what did {person} (say|write) (yesterday|this morning)",
            "(explain|describe) {topic}",
            "let {person} know [that ]i'll be (late|home soon|on time)",
            "tell {person} (i'm on my way|i'll call back|to call me)",
            "(ask|remind) {person} to (call me|be there soon)",
            "(check|look at) {topic}[ for me]",
            "(compose|write) (an email|a reply) to {person}",
            "(reply|answer) to {person}",
            "what's the time (zone|difference) (in|between here and) {place}",
            "tell {person} [that ]dinner is (ready|late)",
            "(dim|brighten) the (kitchen|living room) lights",
            "who (won|lost) (the election|the final)",
            "(how cold|how warm) is it in {place}",
            "a recipe (with|for) {thing}",
        ),
        (
            "can you check {topic} for me",
            "(draft|compose) (a reply|an answer) to {person}",
            "what's the time difference (with|to) {place}",
            "any news (about|on) {topic}",
            "(dim|switch off) the lights in the bedroom",
            "tell {person} i'll be (late|there soon)",
            "give me a recipe (for|with) {thing}",
            "how hot is it in {place}",
            "remind me about {topic} (tomorrow|later)",
            "who won (the game|the match) last night",
            "search the web for {topic}",
            "send {person} a message",
            "what's the weather going to be in {place}",
            "read me {topic}",
            "find me {topic}",
        ),
    ),
}


@dataclass(frozen=True)
class Utterance:
    text: str
    expected: RouterLabel
    split: str  # "train" | "test"
    template: str


def label_for(key: str) -> RouterLabel:
    """The label a grammar intent key stands for (``confirm_yes`` -> intent confirm, yes)."""
    if key.startswith("confirm_"):
        return RouterLabel(intent="confirm", route="confirm", confirm=key.removeprefix("confirm_"))  # type: ignore[arg-type]
    return RouterLabel(intent=key, route=ROUTE_OF[key], confirm="none")  # type: ignore[arg-type]


def expand(template: str, slots: dict[str, tuple[str, ...]]) -> list[str]:
    """Every text ``template`` yields with the given slot values (whitespace normalised);
    groups nest: ``[(please|hey) ]``."""
    texts, pos = _sequence(template, 0, slots, closer="")
    if pos != len(template):
        raise ValueError(f"unbalanced template {template!r}")
    return sorted({" ".join(t.split()) for t in texts})


def _sequence(tpl: str, pos: int, slots: dict[str, tuple[str, ...]], closer: str) -> tuple[list[str], int]:
    """Alternatives (``|``-separated sequences) from ``pos`` up to ``closer`` (not consumed)."""
    alternatives: list[str] = []
    current = [""]
    while pos < len(tpl) and tpl[pos] != closer:
        char = tpl[pos]
        if char in "([":
            inner, pos = _sequence(tpl, pos + 1, slots, closer=")" if char == "(" else "]")
            if pos >= len(tpl):
                raise ValueError(f"unbalanced template {tpl!r}")
            pos += 1
            options = inner + ([""] if char == "[" else [])
        elif char == "{":
            close = tpl.index("}", pos)
            options, pos = list(slots[tpl[pos + 1 : close]]), close + 1
        elif char == "|" and closer:
            alternatives.extend(current)
            current, pos = [""], pos + 1
            continue
        else:
            options, pos = [char], pos + 1
        current = [a + b for a in current for b in options]
    alternatives.extend(current)
    return alternatives, pos


def generate(seed: int = 0, per_template: int = 60) -> list[Utterance]:
    """Up to ``per_template`` utterances per template (sampled deterministically), train and test."""
    rng = random.Random(seed)
    out: list[Utterance] = []
    for key, (train, test) in TEMPLATES.items():
        label = label_for(key)
        for split, templates in (("train", train), ("test", test)):
            values = {slot: pair[0 if split == "train" else 1] for slot, pair in SLOTS.items()}
            for template in templates:
                texts = sorted(set(expand(template, values)))
                if len(texts) > per_template:
                    texts = rng.sample(texts, per_template)
                out.extend(Utterance(text, label, split, template) for text in texts)
    return out


class GrammarOracle:
    """An offline teacher: a provider that answers the labelling tool call with the grammar's own
    labels (``--teacher grammar``; tests and benchmarks without a model). It speaks the
    provider interface, so its answers go through the same schema, validation and cache; texts the
    grammar did not generate (traces) get no label."""

    name = "grammar"
    model = "grammar-v1"

    def __init__(self, utterances: list[Utterance]) -> None:
        self._labels = {u.text: u.expected for u in utterances}

    def complete(self, system: str, turns: list[Any], tools: list[dict[str, Any]]) -> Any:
        from microclaw.agent.providers.base import Completion, ToolCall

        items = []
        for line in turns[-1].content.splitlines():
            index, _, quoted = line.partition(". ")
            label = self._labels.get(json.loads(quoted)) if quoted else None
            if label is not None:
                items.append({"index": int(index), **label.model_dump()})
        return Completion(text=None, tool_calls=(ToolCall("oracle", "label_utterances", {"labels": items}),))
