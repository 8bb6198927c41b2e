"""The firmware's portable C core as a device on this machine: built with gcc as a shared library
(with UBSan, aborting on undefined behaviour) and driven through ctypes by a host HAL.

The HAL is the host's version of what firmware/main/hal_esp.c is on the ESP32-S3: storage is one
JSON file written atomically (NVS), the clock is ``time.monotonic``, random is ``os.urandom``,
the network is a real WebSocket over real TLS (``websockets``' sync client, the device CA as the
only trust anchor, the client certificate from storage once paired), the key and CSR come from
``cryptography`` (mbedTLS on the device), partitions are files. Every decision - pairing steps,
hello, seq/replay/dedupe, the offline ring, acks, OTA checks, slots - is the C core's.

The driver is one thread: ``pump`` reads frames with a short timeout, hands them to
``mc_device_on_text``, ticks the core, and reconnects (after pairing, with the certificate) the
way app_main.c does. A Python exception inside a HAL callback is recorded and fails the test
(ctypes would otherwise swallow it).
"""

from __future__ import annotations

import base64
import ctypes as C
import http.client
import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[3]
CORE = ROOT / "firmware" / "components" / "microclaw_core"
SHIM = Path(__file__).with_name("coredev_shim.c")

MC_OK, MC_ERR_NOT_FOUND, MC_ERR_NOSPACE, MC_ERR_IO = 0, -7, -2, -8
DISPLAY_FIELDS = {
    0: "state",
    1: "pair_code",
    2: "connection",
    3: "last_message",
    4: "ota_progress",
    5: "error",
}
STATES = ["idle", "connecting", "pairing", "listening", "speaking", "upgrading", "error"]


def build_core(out_dir: Path) -> Path:
    """gcc -shared of every core source (UBSan, aborting on undefined behaviour), vendored
    Monocypher (-O2, no sanitizer: it is the slow part to instrument) and the test shim."""
    mono = CORE / "third_party" / "monocypher"
    objects = []
    for source in sorted(mono.glob("*.c")):
        obj = out_dir / (source.stem + ".o")
        _gcc(["-c", "-fPIC", "-std=c11", "-O2", "-I", str(mono), str(source), "-o", str(obj)])
        objects.append(obj)
    lib = out_dir / "libmicroclaw_core.so"
    sources = [*sorted((CORE / "src").glob("*.c")), SHIM]
    _gcc([
        "-shared", "-fPIC", "-std=c11", "-O1", "-g", "-Wall", "-Wextra",
        "-fsanitize=undefined", "-fno-sanitize-recover=undefined",
        "-I", str(CORE / "include"), "-I", str(mono), *map(str, sources), *map(str, objects), "-o", str(lib),
    ])  # fmt: skip
    return lib


def _gcc(args: list[str]) -> None:
    result = subprocess.run(["gcc", *args], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError("building the core failed:\n" + result.stderr)


_u8p = C.POINTER(C.c_uint8)
STORAGE_GET = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p, _u8p, C.c_size_t, C.POINTER(C.c_size_t))
STORAGE_SET = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p, _u8p, C.c_size_t)
STORAGE_ERASE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p)
NOW_MS = C.CFUNCTYPE(C.c_uint64, C.c_void_p)
RANDOM = C.CFUNCTYPE(C.c_int, C.c_void_p, _u8p, C.c_size_t)
NET_SEND = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p, C.c_size_t)
DISPLAY = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_char_p)
AUDIO_CTL = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int)
AUDIO_WRITE = C.CFUNCTYPE(C.c_int, C.c_void_p, _u8p, C.c_size_t)
PART_BEGIN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, C.c_int, C.c_uint32)
PART_WRITE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, C.c_int, _u8p, C.c_size_t)
PART_FINISH = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, C.c_int)
PART_SET_BOOT = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, C.c_int)
REBOOT = C.CFUNCTYPE(None, C.c_void_p)
CSR_MAKE = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p, C.c_void_p, C.c_size_t, C.POINTER(C.c_size_t))
LOG = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_char_p)


class Hal(C.Structure):
    """mc_hal_t (firmware/components/microclaw_core/include/mc_hal.h), field for field."""

    _fields_ = [
        ("ctx", C.c_void_p),
        ("storage_get", STORAGE_GET),
        ("storage_set", STORAGE_SET),
        ("storage_erase", STORAGE_ERASE),
        ("now_ms", NOW_MS),
        ("random", RANDOM),
        ("net_send", NET_SEND),
        ("display", DISPLAY),
        ("audio_ctl", AUDIO_CTL),
        ("audio_write", AUDIO_WRITE),
        ("part_begin", PART_BEGIN),
        ("part_write", PART_WRITE),
        ("part_finish", PART_FINISH),
        ("part_set_boot", PART_SET_BOOT),
        ("reboot", REBOOT),
        ("csr_make", CSR_MAKE),
        ("log", LOG),
    ]


def load(lib_path: Path) -> C.CDLL:
    lib = C.CDLL(str(lib_path))
    dev = C.c_void_p
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "mcx_device_size": (C.c_size_t, []),
        "mcx_hal_size": (C.c_size_t, []),
        "mcx_init": (
            C.c_int,
            [
                dev,
                C.POINTER(Hal),
                C.c_char_p,
                C.c_char_p,
                C.c_char_p,
                C.c_char_p,
                C.c_char_p,
                C.c_uint32,
                C.c_uint32,
                C.c_uint32,
                C.c_uint32,
                C.c_uint32,
            ],
        ),
        "mc_device_event": (C.c_int, [dev, C.c_int]),
        "mc_device_connected": (C.c_int, [dev]),
        "mc_device_disconnected": (C.c_int, [dev]),
        "mc_device_on_text": (C.c_int, [dev, C.c_char_p, C.c_size_t]),
        "mc_device_say": (C.c_int, [dev, C.c_char_p, C.c_char_p, C.c_size_t]),
        "mc_device_tick": (C.c_int, [dev]),
        "mc_device_version": (C.c_char_p, [dev, C.c_int]),
        "mc_device_ota_begin": (C.c_int, [dev]),
        "mc_device_ota_write": (C.c_int, [dev, C.c_char_p, C.c_size_t]),
        "mc_device_ota_finish": (C.c_int, [dev]),
        "mc_device_self_test": (C.c_int, [dev, C.c_int, C.c_int, C.c_char_p]),
        "mc_pairing_is_paired": (C.c_int, [C.POINTER(Hal)]),
        "mc_strerror": (C.c_char_p, [C.c_int]),
        "mc_state_name": (C.c_char_p, [C.c_int]),
        "mc_ring_slot_bytes": (C.c_size_t, []),
        "mcx_pair_error": (C.c_char_p, [dev]),
        "mcx_offer_url": (C.c_char_p, [dev]),
        "mcx_offer_version": (C.c_char_p, [dev]),
        "mcx_last_seen": (C.c_int64, [dev]),
    }
    for name in (
        "state",
        "welcomed",
        "connected",
        "boot_fw",
        "boot_model",
        "pair_state",
        "offer_ready",
        "offer_kind",
        "ota_state",
        "last_error",
    ):
        sigs[f"mcx_{name}"] = (C.c_int, [dev])
    for name in (
        "bad_frames",
        "events_shown",
        "duplicates",
        "gaps",
        "ring_count",
        "ring_dropped",
        "ring_slots",
    ):
        sigs[f"mcx_{name}"] = (C.c_uint32, [dev])
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    if lib.mcx_hal_size() != C.sizeof(Hal):
        raise RuntimeError(f"mc_hal_t is {lib.mcx_hal_size()} bytes in C, {C.sizeof(Hal)} here: update Hal")
    return lib


class Storage:
    """NVS as one JSON file of base64 values, replaced atomically on every write (fsync'd)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, bytes] = {}
        if path.exists():
            self.data = {k: base64.b64decode(v) for k, v in json.loads(path.read_text()).items()}
        self.writes = 0

    def set(self, key: str, value: bytes) -> None:
        self.data[key] = value
        self._save()

    def erase(self, key: str) -> None:
        if self.data.pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as handle:
            json.dump({k: base64.b64encode(v).decode() for k, v in self.data.items()}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self.writes += 1


class CoreDevice:
    """One terminal: the C core plus the host HAL. ``home`` holds its NVS file, key and slots; a
    new CoreDevice on the same ``home`` is the same board after a reboot."""

    def __init__(
        self,
        lib: C.CDLL,
        home: Path,
        url: str,
        ca_pem: str,
        device_id: str,
        *,
        ota_pubkey: bytes = bytes(32),
        board: str = "esp32s3-box3",
        fw_version: str = "1.0.0",
        model_version: str = "",
        ring_slots: int = 0,
        poll_ms: int = 50,
        slot_size: int = 1 << 20,
        max_boot_tries: int = 3,
        on_code: Callable[[str], None] | None = None,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.lib, self.home, self.url, self.ca_pem, self.device_id = lib, home, url, ca_pem, device_id
        self.storage = Storage(home / "nvs.json")
        self.on_code = on_code
        self.slot_size = slot_size
        self.ws: ClientConnection | None = None
        self.link_with_cert = False
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.shown: dict[str, str] = {}
        self.states: list[str] = []
        self.messages: list[str] = []  # MC_DISPLAY_LAST_MESSAGE, in the order shown
        self.logs: list[str] = []
        self.closes: list[int | None] = []
        self.errors: list[BaseException] = []
        self.reboots = 0
        self.boot_slot: dict[int, int] = {}
        self._keep: list[Any] = []
        self.hal = self._make_hal()
        self.dev = C.create_string_buffer(lib.mcx_device_size())
        rc = lib.mcx_init(
            self.dev, C.byref(self.hal), device_id.encode(), board.encode(), fw_version.encode(),
            model_version.encode(), ota_pubkey, ring_slots, poll_ms, slot_size, slot_size, max_boot_tries,
        )  # fmt: skip
        self.check(rc, "mc_device_init")

    # --- the HAL ----------------------------------------------------------------------------

    def _guard(self, proto: Any, fn: Callable[..., Any], failure: Any) -> Any:
        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except BaseException as exc:  # recorded: ctypes would print and return 0
                self.errors.append(exc)
                return failure

        cb = proto(wrapped)
        self._keep.append(cb)
        return cb

    def _make_hal(self) -> Hal:
        def storage_get(_ctx: Any, key: bytes, buf: Any, cap: int, length: Any) -> int:
            value = self.storage.data.get(key.decode())
            if value is None:
                return MC_ERR_NOT_FOUND
            if len(value) > cap:
                return MC_ERR_NOSPACE
            C.memmove(buf, value, len(value))
            length[0] = len(value)
            return MC_OK

        def storage_set(_ctx: Any, key: bytes, data: Any, length: int) -> int:
            assert len(key) <= 15, f"NVS keys are at most 15 characters: {key!r}"
            self.storage.set(key.decode(), C.string_at(data, length))
            return MC_OK

        def storage_erase(_ctx: Any, key: bytes) -> int:
            self.storage.erase(key.decode())
            return MC_OK

        def random(_ctx: Any, buf: Any, length: int) -> int:
            C.memmove(buf, os.urandom(length), length)
            return MC_OK

        def net_send(_ctx: Any, frame: int, length: int) -> int:
            if self.ws is None:
                return MC_ERR_IO
            text = C.string_at(frame, length).decode()
            self.sent.append(json.loads(text))
            try:
                self.ws.send(text)
            except (ConnectionClosed, OSError):
                return MC_ERR_IO
            return MC_OK

        def display(_ctx: Any, field: int, text: bytes) -> None:
            name, value = DISPLAY_FIELDS.get(field, str(field)), text.decode()
            self.shown[name] = value
            if name == "state":
                self.states.append(value)
            elif name == "last_message":
                self.messages.append(value)
            elif name == "pair_code" and value and self.on_code is not None:
                self.on_code(value)

        def part_path(kind: int, slot: int) -> Path:
            assert kind in (0, 1) and slot in (0, 1), (kind, slot)
            return self.home / f"slot-{kind}-{slot}.bin"

        def part_begin(_ctx: Any, kind: int, slot: int, size: int) -> int:
            if size > self.slot_size:
                return MC_ERR_IO
            part_path(kind, slot).write_bytes(b"")  # erased
            return MC_OK

        def part_write(_ctx: Any, kind: int, slot: int, data: Any, length: int) -> int:
            with part_path(kind, slot).open("ab") as handle:
                handle.write(C.string_at(data, length))
            return MC_OK

        def part_set_boot(_ctx: Any, kind: int, slot: int) -> int:
            self.boot_slot[kind] = slot
            return MC_OK

        def reboot(_ctx: Any) -> None:
            self.reboots += 1

        def csr_make(_ctx: Any, device_id: bytes, out: int, cap: int, length: Any) -> int:
            key_path = self.home / "device.key"  # the HAL keeps the key; only the CSR leaves
            if key_path.exists():
                loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                assert isinstance(loaded, ec.EllipticCurvePrivateKey)
                key = loaded
            else:
                key = ec.generate_private_key(ec.SECP256R1())
                key_path.write_bytes(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                key_path.chmod(0o600)
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id.decode())]))
                .sign(key, hashes.SHA256())
                .public_bytes(serialization.Encoding.PEM)
            )
            if len(csr) + 1 > cap:
                return MC_ERR_NOSPACE
            C.memmove(out, csr + b"\0", len(csr) + 1)
            length[0] = len(csr)
            return MC_OK

        def log(_ctx: Any, level: int, msg: bytes) -> None:
            self.logs.append(f"{level} {msg.decode(errors='replace')}")

        hal = Hal()
        hal.storage_get = self._guard(STORAGE_GET, storage_get, MC_ERR_IO)
        hal.storage_set = self._guard(STORAGE_SET, storage_set, MC_ERR_IO)
        hal.storage_erase = self._guard(STORAGE_ERASE, storage_erase, MC_ERR_IO)
        hal.now_ms = self._guard(NOW_MS, lambda _ctx: int(time.monotonic() * 1000), 0)
        hal.random = self._guard(RANDOM, random, MC_ERR_IO)
        hal.net_send = self._guard(NET_SEND, net_send, MC_ERR_IO)
        hal.display = self._guard(DISPLAY, display, None)
        hal.audio_ctl = AUDIO_CTL()  # NULL: a text-only board
        hal.audio_write = AUDIO_WRITE()
        hal.part_begin = self._guard(PART_BEGIN, part_begin, MC_ERR_IO)
        hal.part_write = self._guard(PART_WRITE, part_write, MC_ERR_IO)
        hal.part_finish = self._guard(PART_FINISH, lambda _ctx, _kind, _slot: MC_OK, MC_ERR_IO)
        hal.part_set_boot = self._guard(PART_SET_BOOT, part_set_boot, MC_ERR_IO)
        hal.reboot = self._guard(REBOOT, reboot, None)
        hal.csr_make = self._guard(CSR_MAKE, csr_make, MC_ERR_IO)
        hal.log = self._guard(LOG, log, None)
        return hal

    # --- what the app does (app_main.c) ------------------------------------------------------

    def check(self, rc: int, what: str) -> int:
        if self.errors:
            raise AssertionError(f"a HAL callback raised during {what}") from self.errors[0]
        if rc < 0:
            raise AssertionError(f"{what}: {self.lib.mc_strerror(rc).decode()} ({rc})")
        return rc

    @property
    def paired(self) -> bool:
        return bool(self.lib.mc_pairing_is_paired(C.byref(self.hal)))

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem)
        if self.paired:
            cert = self.home / "device.crt"
            cert.write_bytes(self.storage.data["cert"].rstrip(b"\0"))
            ctx.load_cert_chain(cert, self.home / "device.key")
        return ctx

    def connect(self) -> None:
        """Open the link (a client certificate once paired) and tell the core."""
        self.link_with_cert = self.paired
        self.ws = connect(
            self.url,
            ssl=self.ssl_context(),
            compression=None,
            open_timeout=10,
            max_size=65536,
            proxy=None,
            legacy=True,
        )
        rc = self.lib.mc_device_connected(self.dev)
        if rc == MC_ERR_IO:  # the gateway closed the link before the first frame went out
            self.disconnect()
            return
        self.check(rc, "mc_device_connected")

    def disconnect(self) -> None:
        """Drop the link (as a Wi-Fi loss would) and tell the core."""
        if self.ws is not None:
            self.ws.close()
            self.closes.append(self.ws.close_code)
            self.ws = None
            self.check(self.lib.mc_device_disconnected(self.dev), "mc_device_disconnected")

    def say(self, text: str) -> str:
        out = C.create_string_buffer(160)
        self.check(self.lib.mc_device_say(self.dev, text.encode(), out, len(out)), "mc_device_say")
        return out.value.decode()

    def pump(self, until: Callable[[], bool], timeout: float = 30, *, reconnect: bool = True) -> None:
        """Run the app loop until ``until()`` or ``timeout`` (AssertionError then)."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; states {self.states[-5:]}, logs {self.logs[-5:]}")
            if self.ws is None:
                if not reconnect:
                    time.sleep(0.02)
                    continue
                try:
                    self.connect()
                except (OSError, EOFError, ConnectionClosed, InvalidHandshake, InvalidMessage, TimeoutError):
                    time.sleep(0.1)  # as the firmware: retry (app_main backs off exponentially)
                    continue
            try:
                raw = self.ws.recv(timeout=0.02) if self.ws is not None else None
            except TimeoutError:
                raw = None
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
                self.ws = None
                self.check(self.lib.mc_device_disconnected(self.dev), "mc_device_disconnected")
                continue
            if raw is not None:
                text = raw if isinstance(raw, str) else raw.decode()
                self.received.append(json.loads(text))
                self.lib.mc_device_on_text(self.dev, text.encode(), len(text.encode()))
                self.check(0, "mc_device_on_text")
            self.check(self.lib.mc_device_tick(self.dev), "mc_device_tick")
            if self.ws is not None and self.paired and not self.link_with_cert:
                self.disconnect()  # paired on a pre-auth link: reconnect with the certificate

    # --- views --------------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """``dev.welcomed``, ``dev.last_seen``, ``dev.ring_count``... read from the C struct."""
        fn = getattr(self.lib, f"mcx_{name}", None)
        if fn is None or name.startswith("_"):
            raise AttributeError(name)
        value = fn(self.dev)
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None


def claim_in_background(claim: Callable[[str], None]) -> tuple[Callable[[str], None], list[BaseException]]:
    """An ``on_code`` that runs the user's claim (a CLI call) in a thread, once per code."""
    failures: list[BaseException] = []
    seen: set[str] = set()

    def on_code(code: str) -> None:
        if code in seen:
            return
        seen.add(code)

        def run() -> None:
            try:
                claim(code)
            except BaseException as exc:
                failures.append(exc)

        threading.Thread(target=run, daemon=True).start()

    return on_code, failures


def download_offer(dev: CoreDevice, *, tamper: bool = False, chunk: int = 4096) -> int:
    """What app_main.c's download_offer does: GET the offer's url on the gateway over HTTPS with
    the client certificate, stream it through mc_device_ota_begin/write/finish. Returns the
    core's result (MC_OK when staged). ``tamper`` flips one byte in transit."""
    parts = urlsplit(dev.url)
    conn = http.client.HTTPSConnection(
        parts.hostname or "", parts.port, context=dev.ssl_context(), timeout=30
    )
    try:
        conn.request("GET", dev.offer_url)
        response = conn.getresponse()
        if response.status != 200:
            raise AssertionError(f"GET {dev.offer_url}: {response.status}")
        rc = dev.lib.mc_device_ota_begin(dev.dev)
        if rc != MC_OK:
            return int(rc)
        first = True
        while block := response.read(chunk):
            if tamper and first:
                block = bytes([block[0] ^ 1]) + block[1:]
            first = False
            rc = dev.lib.mc_device_ota_write(dev.dev, block, len(block))
            if rc != MC_OK:
                return int(rc)
    finally:
        conn.close()
    return int(dev.lib.mc_device_ota_finish(dev.dev))
