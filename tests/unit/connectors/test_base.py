"""microclaw/connectors/base.py through a tiny recording sibling: declared secrets, the state
file helper and the optional hooks' defaults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar, Self

import pytest

from microclaw.connectors.base import (
    BaseConnector,
    ConnectorSettings,
    Deliver,
    Secrets,
    UndeclaredSecret,
)


class Recording(BaseConnector):
    """Declares one secret and a state file; records what it sent."""

    name: ClassVar[str] = "recording"
    prefix: ClassVar[str] = "rec"
    secrets: ClassVar[tuple[str, ...]] = ("RECORDING_TOKEN",)
    state_file: ClassVar[str | None] = "recording-state.db"

    def __init__(self, token: str) -> None:
        self.token = token
        self.sent: list[tuple[str, str]] = []

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        return cls(settings.secrets.get("RECORDING_TOKEN", ""))

    async def listen(self, deliver: Deliver) -> None:
        await asyncio.Event().wait()

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        self.sent.append((chat_id, text))
        return str(len(self.sent))


class ReadsUndeclared(Recording):
    """The bug this guards against: reading a variable the class does not list."""

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        return cls(settings.secrets.get("OTHER_TOKEN", ""))


def settings(tmp_path: Path, secrets: Secrets | None = None) -> ConnectorSettings:
    return ConnectorSettings(
        name="recording",
        options={},
        data_dir=tmp_path,
        assistant_name="Andy",
        secrets=secrets if secrets is not None else Secrets(Recording.secrets, {"RECORDING_TOKEN": "t0k"}),
    )


def test_declared_secrets_are_read_and_unset_ones_are_absent(tmp_path: Path) -> None:
    assert Recording.from_settings(settings(tmp_path)).token == "t0k"
    empty = Secrets(Recording.secrets, {"RECORDING_TOKEN": ""})
    assert Recording.from_settings(settings(tmp_path, empty)).token == ""
    assert "RECORDING_TOKEN" not in empty and len(empty) == 0


def test_reading_an_undeclared_secret_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(UndeclaredSecret, match=r"'OTHER_TOKEN' is not declared.*RECORDING_TOKEN") as caught:
        ReadsUndeclared.from_settings(settings(tmp_path))
    assert caught.value.name == "OTHER_TOKEN" and caught.value.declared == ("RECORDING_TOKEN",)
    secrets = Secrets(Recording.secrets, {"RECORDING_TOKEN": "t0k"})
    for lookup in (lambda: secrets["OTHER_TOKEN"], lambda: "OTHER_TOKEN" in secrets):
        with pytest.raises(UndeclaredSecret):
            lookup()


def test_secrets_refuse_undeclared_values_and_plain_mappings(tmp_path: Path) -> None:
    with pytest.raises(UndeclaredSecret):
        Secrets(("A",), {"B": "x"})
    with pytest.raises(TypeError, match="must be a Secrets"):
        ConnectorSettings(
            name="recording",
            options={},
            data_dir=tmp_path,
            assistant_name="Andy",
            secrets={"RECORDING_TOKEN": "t0k"},  # type: ignore[arg-type]
        )


def test_secrets_come_from_the_environment_and_never_show_in_repr(tmp_path: Path) -> None:
    environ = {"RECORDING_TOKEN": "s3cret-value", "UNRELATED": "x", "EMPTY": ""}
    secrets = Secrets.from_environ(("RECORDING_TOKEN", "EMPTY"), environ)
    assert dict(secrets) == {"RECORDING_TOKEN": "s3cret-value"}
    assert secrets.declared == ("RECORDING_TOKEN", "EMPTY")
    assert "s3cret" not in repr(secrets) and "s3cret" not in repr(settings(tmp_path, secrets))


def test_open_state_is_the_declared_file_under_the_data_dir(tmp_path: Path) -> None:
    state = Recording.open_state(settings(tmp_path))
    state.put("cursor", 7)
    state.close()
    assert Recording.open_state(settings(tmp_path)).get("cursor") == 7
    assert (tmp_path / "recording-state.db").is_file()
    moved = Recording.open_state(settings(tmp_path), path=tmp_path / "elsewhere" / "s.db")
    assert moved.path == tmp_path / "elsewhere" / "s.db" and moved.get("cursor") is None


def test_open_state_refuses_a_connector_without_a_state_file(tmp_path: Path) -> None:
    class Stateless(Recording):
        state_file: ClassVar[str | None] = None

    with pytest.raises(TypeError, match="Stateless declares no state_file"):
        Stateless.open_state(settings(tmp_path))


def test_optional_hooks_default_to_doing_nothing(tmp_path: Path) -> None:
    connector = Recording.from_settings(settings(tmp_path))

    async def hooks() -> bool:
        shown = await connector.send_typing("rec:1")
        await connector.close()
        return shown

    assert asyncio.run(hooks()) is False
    assert connector.sent == []
