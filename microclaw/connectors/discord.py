"""Discord: a bot in server channels, threads and DMs, with discord.py (gateway + REST).

Capability card:
- Addresses: ``dc:<channel id>`` (a thread or a DM is a channel too). ``message_id`` is
  ``dc:<channel id>:<message id>``; replies point at the same form.
- Inbound: the gateway with the privileged message-content intent (enable it for the bot in
  the developer portal). Messages from bots, including this one, and system messages are
  ignored. A ``<@bot>`` / ``<@!bot>`` mention is stripped and ``@<assistant_name> `` prepended
  unless the rest already starts with it (contract §9.2). Attachments become placeholders
  (``[Image: name]``, ``[Video: name]``, ``[Audio: name]``, ``[File: name]``) on their own lines.
  Events are handled one at a time, in arrival order.
- Ack point: the gateway has none, so the connector keeps its own per-channel cursor (in its
  state file, see State below): a channel is recorded *before* its message is handed to
  ``deliver`` and the cursor moves past the message only after ``deliver`` returned. On every
  READY / RESUMED the channels seen in the last ``catch_up_max_age_s`` (3 days) are read back
  through REST from their cursor (at most ``catch_up_limit`` (100) messages each), so a message
  whose delivery failed or whose process died is delivered again; the store deduplicates by
  ``message_id``.
- Outbound: REST only (``login`` checks the token, no gateway), so it works in the outbound
  worker. At most 2000 characters per message; ``@everyone`` and role pings are suppressed.
  discord.py follows the per-route buckets and the global limit from Discord's headers and
  sleeps through a 429 of up to 30 s (``max_ratelimit_timeout_s``); a longer one becomes
  `TransientConnectorError` with ``retry_after``. 403 (missing access) and 404 (unknown
  channel) are `PermanentConnectorError`. ``send_typing`` triggers the typing indicator (~10 s).
- Check (``microclaw-host doctor``): ``GET /users/@me`` with the token on a session of its own;
  401 is `PermanentConnectorError` naming ``DISCORD_BOT_TOKEN`` (never its value).
- Secrets: ``DISCORD_BOT_TOKEN`` (environment; missing: `ConfigError`, the boot skips the
  connector). Options: ``guild_ready_timeout_s`` (2), ``catch_up_limit``,
  ``catch_up_max_age_s``, ``max_ratelimit_timeout_s``, ``cursor_path``, ``api_base_url`` /
  ``gateway_url`` (a REST or gateway proxy, or a test server; empty: Discord's own).
- State: ``<data_dir>/discord-cursors.db`` (``cursor_path`` moves it), table ``cursors``
  (channel id -> last delivered message id), opened through `BaseConnector.open_state`.
- Cannot: read attachments' contents, see messages of channels it has no access to, or tell
  whether a send that timed out reached Discord (``idempotent_send`` is False).

The SDK is imported only when a token is configured, so an unconfigured Discord costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

from microclaw.connectors.base import BaseConnector, ConnectorSettings, Deliver, number_option
from microclaw.connectors.state import ConnectorState
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
    import discord

logger = logging.getLogger(__name__)

TOKEN_ENV = "DISCORD_BOT_TOKEN"
_DISCORD_EPOCH_MS = 1420070400000
_CONNECTED = object()  # queue marker: a new session began (READY received)
_CATCH_UP = object()  # queue marker: read back what was missed since the cursors


def platform_channel(chat_id: str) -> int:
    """``dc:123`` -> ``123``; anything else is refused (`PermanentConnectorError`)."""
    prefix, _, raw = chat_id.partition(":")
    if prefix != DiscordConnector.prefix or not raw.isdigit():
        raise PermanentConnectorError(f"{chat_id!r} is not a Discord channel address", chat_id=chat_id)
    return int(raw)


def snowflake_ms(snowflake: int) -> int:
    """The Unix time in ms encoded in a Discord id."""
    return (snowflake >> 22) + _DISCORD_EPOCH_MS


def _attachment_line(attachment: Any) -> str:
    kind = (attachment.content_type or "").split("/", 1)[0]
    label = {"image": "Image", "video": "Video", "audio": "Audio"}.get(kind, "File")
    return f"[{label}: {attachment.filename}]"


def _url_option(options: Mapping[str, Any], key: str, schemes: tuple[str, ...]) -> str | None:
    value = str(options.get(key) or "").strip()
    if not value:
        return None
    if urlsplit(value).scheme not in schemes or not urlsplit(value).netloc:
        raise ConfigError(
            f"connectors.discord.{key}: expected a {' or '.join(schemes)} URL, got {value!r}",
            key=f"connectors.discord.{key}",
        )
    return value.rstrip("/")


def _sdk(api_base_url: str | None = None, gateway_url: str | None = None) -> Any:
    """discord.py, imported on first use (voice is never used: its missing-library warnings are
    noise), pointed at other endpoints when configured. discord.py keeps them as class
    attributes, so they hold for the whole process (which has one Discord connector)."""
    import discord
    import discord.gateway
    import discord.http
    import yarl

    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
    if api_base_url:
        discord.http.Route.BASE = api_base_url
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url + "/")
    return discord


def _chat_facts(message: Any, sender_name: str) -> tuple[str | None, bool | None]:
    """(chat name, is group) as far as discord.py knows them; None where it does not (a
    channel read through REST before its guild was loaded), so stored metadata is kept."""
    channel = message.channel
    guild = getattr(message, "guild", None) or getattr(channel, "guild", None)
    if guild is not None:
        name = getattr(channel, "name", None)
        return (f"{guild.name} #{name}" if name else None), True
    if getattr(channel, "guild_id", None) is not None:
        return None, True
    if str(getattr(channel, "type", "")) == "private":
        return sender_name, False  # a DM is named after the person, as NanoClaw does
    return None, None


def message_to_envelope(
    message: discord.Message, *, bot_id: int | None, assistant_name: str, max_text_bytes: int = 65536
) -> Envelope | None:
    """Turn one Discord message into an envelope (None when there is nothing to store).

    Raises `EnvelopeError` when the result would be invalid.
    """
    content = message.content or ""
    if bot_id is not None and (
        bot_id in message.raw_mentions or any(u.id == bot_id for u in message.mentions)
    ):
        content = re.sub(rf"<@!?{bot_id}>", "", content).strip()
        if not build_trigger_pattern(f"@{assistant_name}").search(content):
            content = f"@{assistant_name} {content}"
    extras = [_attachment_line(a) for a in message.attachments]
    extras += [f"[Sticker: {s.name}]" for s in getattr(message, "stickers", ())]
    if extras:
        content = "\n".join([content, *extras]) if content else "\n".join(extras)
    if not content:
        return None
    channel_id = message.channel.id
    chat_jid = f"dc:{channel_id}"
    sender_name = message.author.display_name
    reply: dict[str, Any] = {}
    ref = message.reference
    if ref is not None and ref.message_id is not None:
        reply["reply_to_message_id"] = f"dc:{ref.channel_id or channel_id}:{ref.message_id}"
        # A deleted original resolves to a DeletedReferencedMessage: no content, no author.
        quoted = getattr(ref.resolved, "content", None)
        author = getattr(ref.resolved, "author", None)
        if quoted is not None and author is not None:
            reply["reply_to_message_content"] = quoted
            reply["reply_to_sender_name"] = author.display_name
    chat_name, is_group = _chat_facts(message, sender_name)
    return make_envelope(
        source=DiscordConnector.name,
        message_id=f"{chat_jid}:{message.id}",
        chat_id=chat_jid,
        text=content,
        sender=str(message.author.id),
        sender_name=sender_name,
        ts_ms=snowflake_ms(message.id),
        max_text_bytes=max_text_bytes,
        chat_name=chat_name,
        is_group=is_group,
        **reply,
    )


class ChannelCursors:
    """Per-channel "delivered up to" message ids: the ``cursors`` table of the connector's state file."""

    def __init__(self, state: ConnectorState) -> None:
        self.state = state
        state.execute(
            "CREATE TABLE IF NOT EXISTS cursors (channel_id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL)"
        )

    def get(self, channel_id: int) -> int | None:
        rows = self.state.execute("SELECT message_id FROM cursors WHERE channel_id = ?", (channel_id,))
        return int(rows[0][0]) if rows else None

    def remember(self, channel_id: int, before: int) -> None:
        """Record a channel (cursor just before ``before``) unless it is already known."""
        self.state.execute(
            "INSERT OR IGNORE INTO cursors (channel_id, message_id) VALUES (?, ?)", (channel_id, before - 1)
        )

    def advance(self, channel_id: int, message_id: int) -> None:
        """Move a channel's cursor forward to ``message_id`` (never back); durable when it returns."""
        self.state.execute(
            "INSERT INTO cursors (channel_id, message_id) VALUES (?, ?) ON CONFLICT (channel_id)"
            " DO UPDATE SET message_id = max(message_id, excluded.message_id)",
            (channel_id, message_id),
        )

    def forget(self, channel_id: int) -> None:
        self.state.execute("DELETE FROM cursors WHERE channel_id = ?", (channel_id,))

    def all(self) -> dict[int, int]:
        return {int(c): int(m) for c, m in self.state.execute("SELECT channel_id, message_id FROM cursors")}


def _gateway_client(queue: asyncio.Queue[Any], *, guild_ready_timeout_s: float, max_rl: float) -> Any:
    """A discord.py client that only queues what it receives (handled in order by the connector)."""
    sdk = _sdk()

    class _Gateway(sdk.Client):  # type: ignore[name-defined]  # the SDK is imported on first use
        async def on_connect(self) -> None:
            queue.put_nowait(_CONNECTED)

        async def on_ready(self) -> None:
            queue.put_nowait(_CATCH_UP)

        async def on_resumed(self) -> None:
            queue.put_nowait(_CATCH_UP)

        async def on_message(self, message: Any) -> None:
            queue.put_nowait(message)

    intents = sdk.Intents.none()
    intents.guilds = intents.guild_messages = intents.dm_messages = intents.message_content = True
    return _Gateway(
        intents=intents,
        max_messages=None,
        chunk_guilds_at_startup=False,
        member_cache_flags=sdk.MemberCacheFlags.none(),
        guild_ready_timeout=guild_ready_timeout_s,
        max_ratelimit_timeout=max_rl,
    )


class DiscordConnector(BaseConnector):
    name: ClassVar[str] = "discord"
    prefix: ClassVar[str] = "dc"
    max_text_len: ClassVar[int] = 2000
    idempotent_send: ClassVar[bool] = False
    secrets: ClassVar[tuple[str, ...]] = (TOKEN_ENV,)
    state_file: ClassVar[str | None] = "discord-cursors.db"

    def __init__(
        self,
        token: str,
        *,
        assistant_name: str,
        state: ConnectorState,
        guild_ready_timeout_s: float = 2.0,
        catch_up_limit: int = 100,
        catch_up_max_age_s: float = 3 * 86400,
        max_ratelimit_timeout_s: float = 30.0,
        max_text_bytes: int = 65536,
        api_base_url: str | None = None,
        gateway_url: str | None = None,
    ) -> None:
        if not token:
            raise ConfigError(f"{TOKEN_ENV} is not set", key=TOKEN_ENV)
        self._token = token
        self.assistant_name = assistant_name
        self.cursors = ChannelCursors(state)
        self.guild_ready_timeout_s = guild_ready_timeout_s
        self.catch_up_limit = catch_up_limit
        self.catch_up_max_age_s = catch_up_max_age_s
        self.max_ratelimit_timeout_s = max_ratelimit_timeout_s
        self.max_text_bytes = max_text_bytes
        self.api_base_url = api_base_url or None
        self.gateway_url = gateway_url or None
        self.bot_id: int | None = None
        self._rest: tuple[asyncio.AbstractEventLoop, Any] | None = None

    def __repr__(self) -> str:
        return f"DiscordConnector(state={str(self.cursors.state.path)!r})"

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        token = settings.secrets.get(TOKEN_ENV, "")
        if not token:
            raise ConfigError(
                f"{TOKEN_ENV} is not set (create a bot in the Discord developer portal and put its token"
                " in the environment or .env)",
                key=TOKEN_ENV,
            )
        opts = settings.options
        cursor = str(opts.get("cursor_path") or "")
        return cls(
            token,
            assistant_name=settings.assistant_name,
            state=cls.open_state(settings, path=Path(cursor) if cursor else None),
            guild_ready_timeout_s=number_option(opts, "discord", "guild_ready_timeout_s", 2.0, minimum=0),
            catch_up_limit=int(number_option(opts, "discord", "catch_up_limit", 100, minimum=0)),
            catch_up_max_age_s=number_option(opts, "discord", "catch_up_max_age_s", 3 * 86400, minimum=0),
            max_ratelimit_timeout_s=number_option(
                opts, "discord", "max_ratelimit_timeout_s", 30.0, minimum=30.0
            ),
            max_text_bytes=settings.max_text_bytes,
            api_base_url=_url_option(opts, "api_base_url", ("http", "https")),
            gateway_url=_url_option(opts, "gateway_url", ("ws", "wss")),
        )

    # --- the SDK edge ----------------------------------------------------------------------

    def _translate(self, exc: BaseException, chat_id: str | None) -> ConnectorError:
        """One SDK exception -> ours (raised ``from None``: SDK messages may echo request data)."""
        import aiohttp
        import discord

        text = str(exc).replace(self._token, "<token>")
        if isinstance(exc, discord.RateLimited):
            return TransientConnectorError(
                f"discord rate limit: {text}", chat_id=chat_id, retry_after=exc.retry_after
            )
        if isinstance(exc, discord.LoginFailure):
            return PermanentConnectorError(f"discord rejected the bot token ({TOKEN_ENV})", chat_id=chat_id)
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            return PermanentConnectorError(
                "discord refused the message-content intent: enable it for the bot in the developer portal",
                chat_id=chat_id,
            )
        if isinstance(exc, discord.Forbidden | discord.NotFound):
            return PermanentConnectorError(f"discord refused: {text}", chat_id=chat_id)
        if isinstance(exc, discord.HTTPException):
            if exc.status == 429:
                header = exc.response.headers.get("Retry-After") if exc.response is not None else None
                try:
                    retry_after = float(header) if header else None
                except ValueError:
                    retry_after = None
                return TransientConnectorError(
                    f"discord rate limit: {text}", chat_id=chat_id, retry_after=retry_after
                )
            if exc.status >= 500:
                return TransientConnectorError(f"discord server error: {text}", chat_id=chat_id)
            return PermanentConnectorError(f"discord refused: {text}", chat_id=chat_id)
        if isinstance(exc, discord.ConnectionClosed) and exc.code in (4004, 4010, 4011, 4012, 4013):
            return PermanentConnectorError(f"discord closed the gateway: {text}", chat_id=chat_id)
        if isinstance(exc, OSError | aiohttp.ClientError | asyncio.TimeoutError | discord.DiscordException):
            return TransientConnectorError(
                f"discord unreachable: {type(exc).__name__}: {text}", chat_id=chat_id
            )
        return TransientConnectorError(f"discord error: {type(exc).__name__}: {text}", chat_id=chat_id)

    # --- inbound ---------------------------------------------------------------------------

    async def listen(self, deliver: Deliver) -> None:
        _sdk(self.api_base_url, self.gateway_url)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        client = _gateway_client(
            queue, guild_ready_timeout_s=self.guild_ready_timeout_s, max_rl=self.max_ratelimit_timeout_s
        )
        gateway = asyncio.create_task(client.start(self._token, reconnect=True), name="discord-gateway")
        consumer = asyncio.create_task(self._consume(client, queue, deliver), name="discord-inbound")
        try:
            done, _ = await asyncio.wait({gateway, consumer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, ConnectorError) or (exc is not None and task is consumer):
                    raise exc
                if exc is not None:
                    raise self._translate(exc, None) from None
            raise TransientConnectorError("discord gateway closed")
        finally:
            consumer.cancel()
            await client.close()
            gateway.cancel()
            await asyncio.gather(gateway, consumer, return_exceptions=True)

    async def _consume(self, client: Any, queue: asyncio.Queue[Any], deliver: Deliver) -> None:
        # From a new session's READY until its guilds are loaded (``on_ready``), live messages
        # wait: the catch-up must run first, or a live message would move a channel's cursor
        # past messages that were missed while the bot was away.
        held: list[Any] | None = None
        while True:
            item = await queue.get()
            if client.user is not None:
                self.bot_id = client.user.id
            if item is _CONNECTED:
                held = held if held is not None else []
            elif item is _CATCH_UP:
                logger.info("discord gateway ready as %s", client.user, extra={"connector": self.name})
                await self._catch_up(client, deliver)
                for message in held or ():
                    await self._handle(message, deliver)
                held = None
            elif held is not None:
                held.append(item)
            else:
                await self._handle(item, deliver)

    async def _handle(self, message: discord.Message, deliver: Deliver) -> None:
        if message.author.bot or message.is_system():
            return
        channel_id = message.channel.id
        cursor = await asyncio.to_thread(self.cursors.get, channel_id)
        if cursor is not None and message.id <= cursor:
            return  # delivered before (a catch-up overlapping the live stream)
        if cursor is None:
            await asyncio.to_thread(self.cursors.remember, channel_id, message.id)
        try:
            envelope = message_to_envelope(
                message,
                bot_id=self.bot_id,
                assistant_name=self.assistant_name,
                max_text_bytes=self.max_text_bytes,
            )
        except EnvelopeError as exc:
            logger.warning("discord message %s skipped: %s", message.id, exc, extra={"connector": self.name})
            envelope = None
        if envelope is not None:
            await deliver(envelope)
        await asyncio.to_thread(self.cursors.advance, channel_id, message.id)

    async def _catch_up(self, client: Any, deliver: Deliver) -> None:
        """Deliver what each recently active channel received after its cursor."""
        import discord

        oldest_ms = (time.time() - self.catch_up_max_age_s) * 1000
        cursors = await asyncio.to_thread(self.cursors.all)
        for channel_id, cursor in cursors.items():
            if snowflake_ms(cursor + 1) < oldest_ms or self.catch_up_limit <= 0:
                continue
            channel = client.get_channel(channel_id) or client.get_partial_messageable(channel_id)
            try:
                missed = [
                    m
                    async for m in channel.history(
                        limit=self.catch_up_limit, after=discord.Object(id=cursor), oldest_first=True
                    )
                ]
            except (discord.Forbidden, discord.NotFound) as exc:
                logger.warning(
                    "discord channel %s is gone or closed to the bot (%s); no longer caught up",
                    channel_id,
                    exc.status,
                    extra={"connector": self.name},
                )
                await asyncio.to_thread(self.cursors.forget, channel_id)
                continue
            except Exception as exc:
                raise self._translate(exc, f"dc:{channel_id}") from None
            for message in missed:
                await self._handle(message, deliver)

    # --- outbound --------------------------------------------------------------------------

    async def _rest_client(self) -> Any:
        """This loop's REST-only client: ``login`` (GET /users/@me), never the gateway."""
        discord = _sdk(self.api_base_url, self.gateway_url)

        loop = asyncio.get_running_loop()
        if self._rest is not None and self._rest[0] is loop:
            return self._rest[1]
        intents = discord.Intents.none()
        intents.guilds = True  # no gateway, so no effect; avoids discord.py's "guilds intent" warning
        client = discord.Client(intents=intents, max_ratelimit_timeout=self.max_ratelimit_timeout_s)
        try:
            await client.login(self._token)
        except Exception as exc:
            await client.close()
            raise self._translate(exc, None) from None
        self._rest = (loop, client)
        return client

    async def check(self) -> str | None:
        """``GET /users/@me`` on a throwaway REST session: proves the token (``microclaw-host
        doctor``). A refused token is `PermanentConnectorError` naming the variable, never its value."""
        discord = _sdk(self.api_base_url, self.gateway_url)
        http = discord.http.HTTPClient(
            asyncio.get_running_loop(), max_ratelimit_timeout=self.max_ratelimit_timeout_s
        )
        try:
            me = await http.static_login(self._token)
        except Exception as exc:
            raise self._translate(exc, None) from None
        finally:
            await http.close()
        return f"token accepted: bot {me.get('username')} (id {me.get('id')})"

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        import discord

        channel_id = platform_channel(chat_id)
        client = await self._rest_client()
        mentions = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
        try:
            message = await client.get_partial_messageable(channel_id).send(
                content=text, allowed_mentions=mentions
            )
        except Exception as exc:
            raise self._translate(exc, chat_id) from None
        return str(message.id)

    async def send_typing(self, chat_id: str) -> bool:
        """Trigger the typing indicator in the channel (Discord clears it after ~10 s)."""
        channel_id = platform_channel(chat_id)
        client = await self._rest_client()
        try:
            await client.http.send_typing(channel_id)
        except Exception as exc:
            raise self._translate(exc, chat_id) from None
        return True

    async def close(self) -> None:
        self.cursors.state.close()
        rest, self._rest = self._rest, None
        if rest is not None and rest[0] is asyncio.get_running_loop():
            try:
                await rest[1].close()
            except Exception:  # closing is best effort
                logger.debug("discord client close failed", exc_info=True)
