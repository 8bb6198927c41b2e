"""Grammar, dataset rules (dedup, held-out split, stratified traces, card) and traces scrubbing."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from microclaw.distill import dataset as ds
from microclaw.distill.grammar import SLOTS, TEMPLATES, Utterance, expand, generate
from microclaw.distill.labels import RouterLabel
from microclaw.distill.teacher import PROMPT_VERSION, Label
from microclaw.distill.traces import read_traces, scrub
from tests.unit.distill.conftest import Built


def _label(text: str, intent: str = "agent") -> Label:
    route = {"agent": "host", "stop": "device"}[intent]
    return Label(text, RouterLabel(intent=intent, route=route, confirm="none"), "t:m", PROMPT_VERSION)  # type: ignore[arg-type]


def test_expand_nests_groups_and_normalises_spaces() -> None:
    assert expand("[(please|hey) ]stop", {}) == ["hey stop", "please stop", "stop"]
    assert expand("timer {dur}", {"dur": ("one", "two")}) == ["timer one", "timer two"]


def test_test_split_uses_only_held_out_templates_and_values() -> None:
    utterances = generate(seed=0, per_template=20)
    train = [u for u in utterances if u.split == "train"]
    test = [u for u in utterances if u.split == "test"]
    assert test and {u.template for u in test}.isdisjoint({u.template for u in train})
    train_durations = [re.compile(rf"\b{re.escape(v)}\b") for v in SLOTS["dur"][0]]
    timed = [u for u in test if "{dur}" in u.template]
    assert timed and not any(p.search(u.text) for u in timed for p in train_durations)
    assert set(TEMPLATES) >= {"agent", "confirm_yes", "timer_set"}
    assert generate(seed=0, per_template=20) == utterances  # deterministic
    assert len(train) > 500


def test_dedup_keeps_train_copy_and_card_counts(small_model: Built) -> None:
    records = ds.read(small_model.paths.dataset)
    keys = [r.text for r in records]
    assert len(keys) == len(set(keys))
    train = {r.text for r in records if r.split == "train"}
    assert not any(r.text in train for r in records if r.split == "test")
    card = (small_model.paths.dataset / "card.json").read_text()
    assert '"train/grammar"' in card and '"teacher_vs_grammar_disagreements": {}' in card
    assert '"labelling"' in card and "grammar:grammar-v1" in card


def test_traces_are_split_per_intent_and_texts_in_both_splits_stay_in_train() -> None:
    stop = RouterLabel(intent="stop", route="device", confirm="none")
    grammar = [Utterance("stop", stop, "train", "stop"), Utterance("enough", stop, "test", "enough")]
    traces = [f"please search for thing {i}" for i in range(10)] + ["stop it now", "stop"]
    labels = {t: _label(t) for t in traces[:10]}
    labels["stop it now"] = _label("stop it now", "stop")
    labels["stop"] = _label("stop", "stop")
    for u in grammar:
        labels.setdefault(u.text, Label(u.text, u.expected, "t:m", PROMPT_VERSION))
    records, card = ds.build(grammar, [*traces, "never labelled"], labels)
    trace_records = [r for r in records if r.source == "trace"]
    assert sum(r.split == "test" for r in trace_records if r.intent == "agent") == 2  # 20 % of 10
    assert next(r for r in records if r.text == "stop").source == "grammar"  # deduplicated
    assert card["unlabelled"] == {"trace": 1}
    assert card["counts"]["intent"]["test/trace"] == {"agent": 2}


def test_scrub_removes_personal_data() -> None:
    names = {"Alice Smith", "Alice", "Andy"}
    text = "Hey @Andy tell Alice Smith at alice@example.com or +44 20 7946 0958, see https://x.io/a ok"
    assert scrub(text, names) == "hey tell someone at email or number , see link ok"
    assert scrub("Set a timer for 10 minutes", names) == "set a timer for 10 minutes"


def test_read_traces_reads_human_messages_read_only(tmp_path: Path) -> None:
    db_path = tmp_path / "app.db"
    db = sqlite3.connect(db_path)
    db.executescript(
        "CREATE TABLE chats (jid TEXT PRIMARY KEY, name TEXT);"
        "CREATE TABLE messages (id TEXT, chat_jid TEXT, sender TEXT, sender_name TEXT, content TEXT,"
        " is_from_me INTEGER, is_bot_message INTEGER, seq INTEGER);"
        "INSERT INTO chats VALUES ('dev:1', 'Kitchen Box');"
        "INSERT INTO messages VALUES"
        " ('1','dev:1','u1','Bob Jones','Remind Bob Jones to call 0612345678',0,0,1);"
        "INSERT INTO messages VALUES ('2','dev:1','bot','Andy','Andy: sure',0,1,2);"
        "INSERT INTO messages VALUES ('3','dev:1','me','Me','what I typed',1,0,3);"
        "INSERT INTO messages VALUES ('4','dev:1','u1','Bob Jones','stop',0,0,4);"
        "INSERT INTO messages VALUES ('5','dev:1','u1','Bob Jones','STOP',0,0,5);"
    )
    db.commit()
    db.close()
    before = db_path.read_bytes()
    got = read_traces(db_path, assistant_name="Andy")
    assert got == ["stop", "remind someone to call number"]
    assert db_path.read_bytes() == before
