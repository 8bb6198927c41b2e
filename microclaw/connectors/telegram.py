"""Telegram: a bot in groups and DMs, over the Bot API with python-telegram-bot (long polling).

Capability card:
- Addresses: ``tg:<chat id>`` (groups are negative, ``tg:-1001234567890``; DMs are the user's
  id). ``message_id`` is ``tg:<chat id>:<message id>``; replies point at the same form.
- Inbound: an explicit ``getUpdates`` long-poll loop (``allowed_updates=["message"]``). Text
  arrives as is; other messages become placeholders (``[Photo]``, ``[Voice message]``,
  ``[Document: name]``, …) followed by their caption. A mention of the bot's ``@username``
  makes the message a trigger: ``@<assistant_name> `` is prepended unless the text already
  starts with it (contract §9.2). ``/chatid`` and ``/ping`` are answered by the bot itself and
  never stored. Edits, channel posts and service messages are ignored.
- Ack point: Telegram confirms updates when the next ``getUpdates`` carries an offset past
  them. The offset advances only after ``deliver`` returned for every update before it, so an
  update whose delivery failed (or whose process died) is fetched again; the store deduplicates
  by ``message_id``, so redelivery never makes two rows.
- Outbound: plain text (no parse mode), at most 4096 characters per message. Limits, per
  process: one message per chat per ``per_chat_interval_s`` (1 s), ``group_rate_per_min``
  (20) per group chat, ``global_rate_per_s`` (30) overall (aiolimiter leaky buckets). A 429
  becomes `TransientConnectorError` with Telegram's ``retry_after``, and further sends to that
  chat fail fast until it has passed. Forbidden (blocked, kicked), chat not found and other
  400s are `PermanentConnectorError`; a group upgraded to a supergroup reports its new address.
  ``send_typing`` shows "typing…" (Telegram clears it after ~5 s or at the next message).
- Secrets: ``TELEGRAM_BOT_TOKEN`` (environment; missing: `ConfigError`, the boot skips the
  connector). Options: ``poll_timeout_s`` (30), ``request_timeout_s`` (20),
  ``per_chat_interval_s``, ``group_rate_per_min``, ``global_rate_per_s``, ``base_url`` /
  ``base_file_url`` (a self-hosted Bot API server or a test server; ``{token}`` is substituted,
  otherwise the token is appended).
- State: none on disk. The update offset lives in memory; Telegram keeps unconfirmed updates
  (for 24 h), so a restarted host asks again from the first one not yet confirmed.
- Cannot: receive files' contents (only placeholders), thread replies into forum topics, or
  tell whether a send that timed out reached Telegram (so ``idempotent_send`` is False and an
  interrupted reply is marked uncertain, never repeated). Rate limits are per process: several
  outbound processes sending to one chat rely on Telegram's 429s to slow down.

The SDK is imported only when a token is configured, so an unconfigured Telegram costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from aiolimiter import AsyncLimiter

from microclaw.connectors.base import BaseConnector, ConnectorSettings, Deliver, number_option
from microclaw.core.triggers import build_trigger_pattern
from microclaw.envelope import Envelope, make_envelope
from microclaw.errors import (
    ConfigError,
    ConnectorError,
    EnvelopeError,
    PermanentConnectorError,
    TransientConnectorError,
)

if TYPE_CHECKING:
    from telegram import Bot, Message, Update

logger = logging.getLogger(__name__)

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
BOT_COMMANDS = frozenset({"chatid", "ping"})
_MAX_CHAT_LIMITERS = 1024
_REDACTED = "<token>"

# Non-text messages: the first attribute that is set names the placeholder (NanoClaw's set,
# plus the kinds NanoClaw silently dropped). Animations also carry ``document``: check first.
_PLACEHOLDERS: tuple[tuple[str, str], ...] = (
    ("photo", "[Photo]"),
    ("animation", "[GIF]"),
    ("video", "[Video]"),
    ("video_note", "[Video message]"),
    ("voice", "[Voice message]"),
    ("audio", "[Audio]"),
    ("sticker", "[Sticker]"),
    ("location", "[Location]"),
    ("venue", "[Location]"),
    ("contact", "[Contact]"),
    ("poll", "[Poll]"),
)


def platform_chat(chat_id: str) -> int | str:
    """``tg:-100123`` -> ``-100123``; ``tg:@channel`` -> ``"@channel"``; anything else is refused."""
    prefix, _, raw = chat_id.partition(":")
    if prefix != TelegramConnector.prefix or not raw:
        raise PermanentConnectorError(f"{chat_id!r} is not a Telegram address", chat_id=chat_id)
    if raw.startswith("@") and len(raw) > 1:
        return raw
    try:
        return int(raw)
    except ValueError:
        raise PermanentConnectorError(f"{chat_id!r} is not a Telegram chat id", chat_id=chat_id) from None


def _display_name(user: Any) -> str:
    if user is None:
        return "Unknown"
    return str(user.first_name or user.username or user.id or "Unknown")


def _sender(message: Message) -> tuple[str, str]:
    """(sender id, sender name); anonymous group admins and linked channels post as a chat."""
    if message.from_user is None and message.sender_chat is not None:
        chat = message.sender_chat
        return str(chat.id), str(chat.title or chat.username or chat.id)
    user = message.from_user
    return (str(user.id) if user else ""), _display_name(user)


def describe_content(message: Message) -> str | None:
    """The message's text, or a placeholder plus caption for other kinds; None for service messages."""
    if message.text is not None:
        return message.text
    placeholder: str | None = None
    if message.document is not None and message.animation is None:
        placeholder = f"[Document: {message.document.file_name or 'file'}]"
    else:
        for attribute, label in _PLACEHOLDERS:
            value = getattr(message, attribute, None)
            if value:
                placeholder = label
                if attribute == "sticker" and value.emoji:
                    placeholder = f"[Sticker {value.emoji}]"
                elif attribute == "poll":
                    placeholder = f"[Poll: {value.question}]"
                break
    if placeholder is None:
        return None
    return f"{placeholder} {message.caption}" if message.caption else placeholder


def mentions_bot(message: Message, *, bot_username: str | None, bot_id: int | None) -> bool:
    """Whether the text or caption mentions the bot (``@username`` or a text mention of it)."""
    wanted = f"@{bot_username}".lower() if bot_username else None
    entities = message.parse_entities() if message.text is not None else message.parse_caption_entities()
    for entity, text in entities.items():
        if entity.type == "mention" and wanted and text.lower() == wanted:
            return True
        if entity.type == "text_mention" and entity.user is not None and entity.user.id == bot_id:
            return True
    return False


def message_to_envelope(
    message: Message,
    *,
    assistant_name: str,
    bot_username: str | None,
    bot_id: int | None,
    max_text_bytes: int = 65536,
) -> Envelope | None:
    """Turn one Telegram message into an envelope (None for messages that carry nothing to store).

    Raises `EnvelopeError` when the result would be invalid (e.g. larger than the text limit).
    """
    content = describe_content(message)
    if content is None:
        return None
    if mentions_bot(message, bot_username=bot_username, bot_id=bot_id) and not build_trigger_pattern(
        f"@{assistant_name}"
    ).search(content):
        content = f"@{assistant_name} {content}"
    chat = message.chat
    chat_jid = f"tg:{chat.id}"
    sender, sender_name = _sender(message)
    is_group = chat.type in ("group", "supergroup")
    reply: dict[str, Any] = {}
    replied = message.reply_to_message
    if replied is not None:
        reply = {
            "reply_to_message_id": f"{chat_jid}:{replied.message_id}",
            "reply_to_message_content": replied.text or replied.caption or describe_content(replied),
            "reply_to_sender_name": _sender(replied)[1],
        }
    return make_envelope(
        source=TelegramConnector.name,
        message_id=f"{chat_jid}:{message.message_id}",
        chat_id=chat_jid,
        text=content,
        sender=sender,
        sender_name=sender_name,
        ts_ms=int(message.date.timestamp() * 1000),
        max_text_bytes=max_text_bytes,
        chat_name=(sender_name if chat.type == "private" else chat.title) or chat_jid,
        is_group=is_group,
        **reply,
    )


def bot_command(text: str | None, bot_username: str | None) -> str | None:
    """``"/ping@AndyBot now"`` -> ``"ping"`` when it is one of ours and addressed to this bot."""
    if not text or not text.startswith("/"):
        return None
    head = text[1:].split(maxsplit=1)[0] if len(text) > 1 else ""
    command, _, target = head.partition("@")
    if target and (not bot_username or target.lower() != bot_username.lower()):
        return None
    command = command.lower()
    return command if command in BOT_COMMANDS else None


@dataclass
class _LoopClient:
    """The SDK client and limiters of one event loop (httpx pools and limiters are loop-bound)."""

    loop: asyncio.AbstractEventLoop
    bot: Bot
    global_limiter: AsyncLimiter
    chat_limiters: dict[int | str, AsyncLimiter] = field(default_factory=dict)
    group_limiters: dict[int | str, AsyncLimiter] = field(default_factory=dict)
    initialized: bool = False


class _RedactToken(logging.Filter):
    """Scrubs the token from SDK log lines (Bot API URLs contain it)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if self.token in str(record.msg) or any(self.token in str(a) for a in record.args or ()):
            record.msg = record.getMessage().replace(self.token, _REDACTED)
            record.args = None
        return True


class TelegramConnector(BaseConnector):
    name: ClassVar[str] = "telegram"
    prefix: ClassVar[str] = "tg"
    max_text_len: ClassVar[int] = 4096
    idempotent_send: ClassVar[bool] = False
    secrets: ClassVar[tuple[str, ...]] = (TOKEN_ENV,)
    state_file: ClassVar[str | None] = None

    def __init__(
        self,
        token: str,
        *,
        assistant_name: str,
        base_url: str | None = None,
        base_file_url: str | None = None,
        poll_timeout_s: float = 30.0,
        request_timeout_s: float = 20.0,
        per_chat_interval_s: float = 1.0,
        group_rate_per_min: float = 20.0,
        global_rate_per_s: float = 30.0,
        max_text_bytes: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (monotonic seconds) times how long a chat stays blocked after a 429."""
        if not token:
            raise ConfigError(f"{TOKEN_ENV} is not set", key=TOKEN_ENV)
        self._token = token
        self.assistant_name = assistant_name
        self.base_url = base_url or None
        self.base_file_url = base_file_url or None
        self.poll_timeout_s = poll_timeout_s
        self.request_timeout_s = request_timeout_s
        self.per_chat_interval_s = per_chat_interval_s
        self.group_rate_per_min = group_rate_per_min
        self.global_rate_per_s = global_rate_per_s
        self.max_text_bytes = max_text_bytes
        self.clock = clock
        #: Next update id to ask for; everything below it has been delivered (kept across restarts
        #: of ``listen`` so a failed update is asked for again).
        self.offset: int | None = None
        self.bot_username: str | None = None
        self.bot_id: int | None = None
        self._client: _LoopClient | None = None
        self._blocked_until: dict[int | str, float] = {}

    def __repr__(self) -> str:
        return f"TelegramConnector(base_url={self.base_url!r})"

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        token = settings.secrets.get(TOKEN_ENV, "")
        if not token:
            raise ConfigError(
                f"{TOKEN_ENV} is not set (get a token from @BotFather and put it in the environment or .env)",
                key=TOKEN_ENV,
            )
        opts = settings.options
        return cls(
            token,
            assistant_name=settings.assistant_name,
            base_url=str(opts.get("base_url") or "") or None,
            base_file_url=str(opts.get("base_file_url") or "") or None,
            poll_timeout_s=number_option(opts, "telegram", "poll_timeout_s", 30.0, minimum=0),
            request_timeout_s=number_option(opts, "telegram", "request_timeout_s", 20.0, minimum=0.1),
            per_chat_interval_s=number_option(opts, "telegram", "per_chat_interval_s", 1.0, minimum=0.001),
            group_rate_per_min=number_option(opts, "telegram", "group_rate_per_min", 20.0, minimum=1),
            global_rate_per_s=number_option(opts, "telegram", "global_rate_per_s", 30.0, minimum=1),
            max_text_bytes=settings.max_text_bytes,
        )

    # --- the SDK edge ----------------------------------------------------------------------

    def _new_client(self, loop: asyncio.AbstractEventLoop) -> _LoopClient:
        from telegram import Bot
        from telegram.request import HTTPXRequest

        timeout = self.request_timeout_s
        kwargs: dict[str, Any] = {}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if self.base_file_url:
            kwargs["base_file_url"] = self.base_file_url
        redact = _RedactToken(self._token)
        for name in ("httpx", Bot._LOGGER.name):
            target = logging.getLogger(name)
            if not any(isinstance(f, _RedactToken) and f.token == self._token for f in target.filters):
                target.addFilter(redact)
        bot = Bot(
            self._token,
            request=HTTPXRequest(
                connection_pool_size=8, read_timeout=timeout, write_timeout=timeout, connect_timeout=timeout
            ),
            # getUpdates adds its long-poll timeout to this read timeout.
            get_updates_request=HTTPXRequest(connection_pool_size=1, read_timeout=timeout),
            **kwargs,
        )
        return _LoopClient(loop=loop, bot=bot, global_limiter=AsyncLimiter(self.global_rate_per_s, 1.0))

    async def _ready(self) -> _LoopClient:
        """This loop's initialized client (``getMe`` once per loop; learns the bot's username)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.loop is not loop:
            self._client = self._new_client(loop)
        client = self._client
        if not client.initialized:
            try:
                await client.bot.initialize()
            except Exception as exc:
                raise self._translate(exc, None) from None
            client.initialized = True
            me = client.bot.bot
            self.bot_username, self.bot_id = me.username, me.id
        return client

    def _translate(self, exc: BaseException, chat_id: str | None) -> ConnectorError:
        """One SDK exception -> ours. Callers raise it ``from None``: SDK messages can contain the
        token (``InvalidToken`` quotes it), and a chained cause would reach the logs."""
        from telegram.error import (
            BadRequest,
            ChatMigrated,
            Conflict,
            EndPointNotFound,
            Forbidden,
            InvalidToken,
            NetworkError,
            RetryAfter,
        )
        from telegram.warnings import PTBDeprecationWarning

        text = str(exc).replace(self._token, _REDACTED)
        if isinstance(exc, RetryAfter):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PTBDeprecationWarning)
                raw = exc.retry_after
            seconds = raw.total_seconds() if hasattr(raw, "total_seconds") else float(raw)
            return TransientConnectorError(
                f"telegram flood control: {text}", chat_id=chat_id, retry_after=seconds
            )
        if isinstance(exc, ChatMigrated):
            return PermanentConnectorError(
                f"the group became a supergroup; its new address is tg:{exc.new_chat_id}", chat_id=chat_id
            )
        if isinstance(exc, InvalidToken):
            return PermanentConnectorError(f"telegram rejected the bot token ({TOKEN_ENV})", chat_id=chat_id)
        if isinstance(exc, Forbidden | BadRequest | EndPointNotFound):
            return PermanentConnectorError(f"telegram refused: {text}", chat_id=chat_id)
        if isinstance(exc, Conflict):
            return TransientConnectorError(f"telegram conflict: {text}", chat_id=chat_id)
        if isinstance(exc, NetworkError):
            return TransientConnectorError(f"telegram unreachable: {text}", chat_id=chat_id)
        return TransientConnectorError(f"telegram error: {type(exc).__name__}: {text}", chat_id=chat_id)

    # --- inbound ---------------------------------------------------------------------------

    async def listen(self, deliver: Deliver) -> None:
        bot = (await self._ready()).bot
        try:
            await bot.delete_webhook()  # getUpdates is refused while a webhook is set
        except Exception as exc:
            raise self._translate(exc, None) from None
        logger.info("telegram polling as @%s", self.bot_username, extra={"connector": self.name})
        while True:
            try:
                updates = await bot.get_updates(
                    offset=self.offset, timeout=int(self.poll_timeout_s), allowed_updates=["message"]
                )
            except Exception as exc:
                raise self._translate(exc, None) from None
            for update in updates:
                await self._handle(update, deliver)
                # Confirmed to Telegram by the next getUpdates, i.e. only once delivered.
                self.offset = update.update_id + 1

    async def _handle(self, update: Update, deliver: Deliver) -> None:
        message = update.message
        if message is None:
            return
        command = bot_command(message.text, self.bot_username)
        if command is not None:
            await self._answer(command, message)
            return
        try:
            envelope = message_to_envelope(
                message,
                assistant_name=self.assistant_name,
                bot_username=self.bot_username,
                bot_id=self.bot_id,
                max_text_bytes=self.max_text_bytes,
            )
        except EnvelopeError as exc:
            logger.warning(
                "telegram message %s skipped: %s", message.message_id, exc, extra={"connector": self.name}
            )
            return
        if envelope is None:
            return
        await deliver(envelope)

    async def _answer(self, command: str, message: Message) -> None:
        chat = message.chat
        if command == "chatid":
            name = _display_name(message.from_user) if chat.type == "private" else chat.title or "Unknown"
            text = f"Chat ID: tg:{chat.id}\nName: {name}\nType: {chat.type}"
        else:
            text = f"{self.assistant_name} is online."
        try:
            await self.send(f"tg:{chat.id}", text, idempotency_key=f"command:{chat.id}:{message.message_id}")
        except ConnectorError as exc:
            # Best effort: a command reply must never stall the update stream.
            logger.warning("telegram /%s reply failed: %s", command, exc, extra={"connector": self.name})

    # --- outbound --------------------------------------------------------------------------

    async def _throttle(self, client: _LoopClient, chat: int | str, chat_id: str) -> None:
        blocked = self._blocked_until.get(chat, 0.0) - self.clock()
        if blocked > 0:
            raise TransientConnectorError(
                "telegram flood control still in effect", chat_id=chat_id, retry_after=blocked
            )
        limiters = client.chat_limiters
        if len(limiters) > _MAX_CHAT_LIMITERS:
            for key in [k for k, lim in limiters.items() if lim.has_capacity(lim.max_rate)]:
                limiters.pop(key, None)
                client.group_limiters.pop(key, None)
        per_chat = limiters.get(chat)
        if per_chat is None:
            per_chat = limiters[chat] = AsyncLimiter(1, self.per_chat_interval_s)
        await per_chat.acquire()
        if isinstance(chat, int) and chat < 0:
            group = client.group_limiters.get(chat)
            if group is None:
                group = client.group_limiters[chat] = AsyncLimiter(self.group_rate_per_min, 60.0)
            await group.acquire()
        await client.global_limiter.acquire()

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        chat = platform_chat(chat_id)
        client = await self._ready()
        await self._throttle(client, chat, chat_id)
        try:
            message = await client.bot.send_message(chat_id=chat, text=text)
        except Exception as exc:
            error = self._translate(exc, chat_id)
            if error.retry_after:
                self._blocked_until[chat] = self.clock() + error.retry_after
            raise error from None
        return str(message.message_id)

    async def check(self) -> str | None:
        """``getMe``: proves the token (``microclaw-host doctor``)."""
        await self._ready()
        return f"token accepted: bot @{self.bot_username}"

    async def send_typing(self, chat_id: str) -> bool:
        """Show "typing…" in the chat (``sendChatAction``; Telegram clears it after ~5 s)."""
        chat = platform_chat(chat_id)
        client = await self._ready()
        try:
            await client.bot.send_chat_action(chat_id=chat, action="typing")
        except Exception as exc:
            raise self._translate(exc, chat_id) from None
        return True

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.loop is asyncio.get_running_loop():
            try:
                await client.bot.shutdown()
            except Exception:  # closing is best effort
                logger.debug("telegram client shutdown failed", exc_info=True)
