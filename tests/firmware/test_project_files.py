"""The ESP-IDF project files of firmware/ checked on a machine without ESP-IDF: the partition
table against the flash size and the OTA/rollback rules, the factory NVS image built with
Espressif's generator and read back by an independent reader, the component manifest through
Espressif's component manager, and the Kconfig menu through esp-idf-kconfig's parser.

None of this compiles the app: `idf.py build` needs Espressif's toolchain (firmware/README.md).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import esp_kconfiglib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from idf_component_tools.manager import ManifestManager
from idf_component_tools.semver import SimpleSpec, Version

from microclaw.gateway.ca import DeviceCA
from tests.firmware import nvs_image

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"
TOOL = FW / "tools" / "factory_nvs.py"
TABLE_OFFSET_DEFAULT = 0x8000
APP_ALIGN, DATA_ALIGN = 0x10000, 0x1000
FLASH_SIZES = {f"CONFIG_ESPTOOLPY_FLASHSIZE_{n}MB": n << 20 for n in (2, 4, 8, 16, 32, 64, 128)}


# --- sdkconfig.defaults ------------------------------------------------------------------


def sdkconfig_defaults(path: Path = FW / "sdkconfig.defaults.esp32s3") -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert name.startswith("CONFIG_") and value, f"not a Kconfig assignment: {line!r}"
            assert name not in values, f"{name} set twice"
            values[name] = value.strip('"')
    return values


def flash_size(config: dict[str, str]) -> int:
    chosen = [size for name, size in FLASH_SIZES.items() if config.get(name) == "y"]
    assert len(chosen) == 1, "exactly one CONFIG_ESPTOOLPY_FLASHSIZE_xMB=y"
    return chosen[0]


def test_sdkconfig_enables_rollback_and_the_custom_partition_table() -> None:
    config = sdkconfig_defaults()
    assert config["CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE"] == "y"
    assert config["CONFIG_PARTITION_TABLE_CUSTOM"] == "y"
    assert (FW / config["CONFIG_PARTITION_TABLE_CUSTOM_FILENAME"]).is_file()
    assert flash_size(config) == 16 << 20  # the ESP32-S3-BOX-3's flash
    assert config["CONFIG_SPIRAM_MODE_OCT"] == "y"


# --- partitions.csv ----------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    name: str
    type: str
    subtype: str
    offset: int
    size: int
    flags: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.offset + self.size


def _number(text: str) -> int:
    text = text.strip().upper()
    for suffix, scale in (("K", 1 << 10), ("M", 1 << 20)):
        if text.endswith(suffix):
            return int(text[:-1], 0) * scale
    return int(text, 0)


def parse_table(text: str) -> list[Partition]:
    """The CSV format of ESP-IDF's gen_esp32part.py; this table gives every offset explicitly."""
    rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].strip().startswith("#")]
    parts = []
    for row in rows:
        cells = [c.strip() for c in row] + [""] * (6 - len(row))
        name, kind, subtype, offset, size, flags = cells[:6]
        if not offset:
            raise ValueError(f"{name}: give every offset explicitly")
        marks = tuple(f for f in flags.split(":") if f)
        parts.append(Partition(name, kind, subtype, _number(offset), _number(size), marks))
    return parts


def problems(parts: list[Partition], flash: int, table_offset: int = TABLE_OFFSET_DEFAULT) -> list[str]:
    """What `idf.py build` (gen_esp32part) or the OTA/rollback design would reject."""
    found: list[str] = []
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        found.append("duplicate partition names")
    previous_end = table_offset + 0x1000  # the partition table itself
    for p in sorted(parts, key=lambda p: p.offset):
        align = APP_ALIGN if p.type == "app" else DATA_ALIGN
        if len(p.name) > 16:
            found.append(f"{p.name}: name over 16 characters")
        if p.offset % align:
            found.append(f"{p.name}: offset {p.offset:#x} not aligned to {align:#x}")
        if p.size <= 0 or p.size % DATA_ALIGN:
            found.append(f"{p.name}: size {p.size:#x} not a positive multiple of 4 KiB")
        if p.offset < previous_end:
            found.append(f"{p.name}: overlaps the previous partition (or the table) at {p.offset:#x}")
        if p.end > flash:
            found.append(f"{p.name}: ends at {p.end:#x}, past the {flash >> 20} MB flash")
        if p.type not in ("app", "data"):
            found.append(f"{p.name}: type {p.type!r}")
        if "readonly" in p.flags and (p.type != "data" or p.subtype in ("ota", "coredump")):
            found.append(f"{p.name}: readonly is only for data partitions other than ota/coredump")
        previous_end = max(previous_end, p.end)
    apps = {p.subtype: p for p in parts if p.type == "app"}
    if set(apps) != {"ota_0", "ota_1"}:
        found.append(f"app partitions {sorted(apps)}: want exactly ota_0 and ota_1 (A/B, no factory app)")
    elif apps["ota_0"].size != apps["ota_1"].size:
        found.append("ota_0 and ota_1 differ in size")
    by_subtype = {p.subtype: p for p in parts if p.type == "data"}
    otadata = by_subtype.get("ota")
    if otadata is None or otadata.size != 0x2000:
        found.append("otadata (data, ota, 0x2000) is required for OTA and rollback")
    if not any(p.name == "nvs" and p.subtype == "nvs" for p in parts):
        found.append("the default NVS partition 'nvs' is missing")
    models = [p for p in parts if p.name in ("model_a", "model_b")]
    if len(models) != 2:
        found.append("two model slots model_a and model_b are required")
    else:
        a, b = models
        if a.type != "data" or b.type != "data" or a.subtype != b.subtype or a.size != b.size:
            found.append("model_a and model_b must be data partitions of one subtype and size")
        if a.offset % APP_ALIGN or b.offset % APP_ALIGN:
            found.append("model slots must be 64 KiB aligned (memory-mapped by the interpreter)")
    return found


def table() -> list[Partition]:
    return parse_table((FW / "partitions.csv").read_text())


def test_the_partition_table_fits_the_flash_with_two_app_and_two_model_slots() -> None:
    parts = table()
    config = sdkconfig_defaults()
    assert problems(parts, flash_size(config), _number(config["CONFIG_PARTITION_TABLE_OFFSET"])) == []
    by_name = {p.name: p for p in parts}
    assert by_name["fctry"].subtype == "nvs" and "readonly" in by_name["fctry"].flags
    assert by_name["ota_0"].size >= 0x300000  # room for LVGL + TFLM + TLS with margin
    # The documented flashing commands use fctry's real offset.
    offsets = re.findall(r"write_flash (0x[0-9a-f]+) fctry\.bin", (FW / "README.md").read_text())
    offsets += re.findall(r"write_flash (0x[0-9a-f]+) fctry\.bin", TOOL.read_text())
    assert offsets and {int(o, 16) for o in offsets} == {by_name["fctry"].offset}


def without(text: str, name: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(name))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace("0x420000, 0x400000", "0x420000, 0x3f0000"), "differ in size"),
        (
            lambda t: t.replace("ota_1,    app,  ota_1,   0x420000", "ota_1,    app,  ota_1,   0x418000"),
            "not aligned",
        ),
        (
            lambda t: t.replace("model_b,  data, 0x40,    0xb20000", "model_b,  data, 0x40,    0x900000"),
            "overlaps",
        ),
        (lambda t: t.replace("0xb20000, 0x300000", "0xf20000, 0x300000"), "past the 16 MB"),
        (lambda t: without(t, "otadata"), "otadata"),
        (lambda t: without(t, "model_b"), "two model slots"),
    ],
)
def test_the_table_checks_catch_broken_layouts(change: Callable[[str], str], expected: str) -> None:
    broken = parse_table(change((FW / "partitions.csv").read_text()))
    found = problems(broken, 16 << 20)
    assert any(expected in f for f in found), found


# --- the factory NVS image ---------------------------------------------------------------


def factory(
    tmp_path: Path,
    *extra: str,
    pin: str | None = None,
    url: str = "wss://192.168.1.10:8766",
    pubkey: str | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path, DeviceCA, bytes]:
    ca = DeviceCA.load_or_create(tmp_path / "gateway")
    (tmp_path / "ca.pem").write_text(ca.ca_pem)
    ota_key = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    out = tmp_path / "fctry.bin"
    args = [
        sys.executable,
        str(TOOL),
        "--gateway-url",
        url,
        "--ca-pem",
        str(tmp_path / "ca.pem"),
        "--ca-pin",
        pin if pin is not None else ca.pin(),
        "--ota-pubkey",
        pubkey or ota_key.hex(),
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120), out, ca, ota_key


def test_factory_nvs_image_carries_url_ca_pin_and_ota_key(tmp_path: Path) -> None:
    result, out, ca, ota_key = factory(tmp_path)
    assert result.returncode == 0, result.stderr
    fctry = next(p for p in table() if p.name == "fctry")
    image = out.read_bytes()
    assert len(image) == fctry.size
    read = nvs_image.read(image)
    assert read.namespaces == {"mc_factory": 1}
    assert read.values == {
        ("mc_factory", "gateway_url"): "wss://192.168.1.10:8766",
        ("mc_factory", "ca_pem"): ca.ca_pem,
        ("mc_factory", "ca_pin"): ca.pin(),
        ("mc_factory", "ota_pubkey"): ota_key,
        ("mc_factory", "board"): "esp32s3-box3",
    }
    # The pin is the SPKI hash of the stored CA, the same the gateway's `ca-pin` prints.
    spki = ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert (
        read.values[("mc_factory", "ca_pin")]
        == "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
    )


def test_the_nvs_reader_rejects_a_flipped_bit(tmp_path: Path) -> None:
    result, out, _, _ = factory(tmp_path)
    assert result.returncode == 0, result.stderr
    image = bytearray(out.read_bytes())
    image[64 + 32 * 3 + 40] ^= 0x01  # inside the first string's data
    with pytest.raises(nvs_image.NvsFormatError):
        nvs_image.read(bytes(image))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"pin": "sha256/" + base64.b64encode(b"x" * 32).decode()}, "does not match"),
        ({"url": "ws://192.168.1.10:8766"}, "wss://"),
        ({"pubkey": "ab" * 31}, "64 hex digits"),
    ],
)
def test_bad_factory_input_is_refused_and_writes_nothing(
    tmp_path: Path, kwargs: dict[str, str], reason: str
) -> None:
    result, out, _, _ = factory(tmp_path, **kwargs)
    assert result.returncode == 2
    assert reason in result.stderr
    assert not out.exists()


# --- idf_component.yml -------------------------------------------------------------------


def test_component_manifest_is_valid_and_every_dependency_is_bounded(tmp_path: Path) -> None:
    manager = ManifestManager(FW / "main", "main")
    assert manager.validation_errors == []
    requirements = {r.name: r.version_spec for r in manager.manifest.requirements}
    for name in (
        "espressif/esp_websocket_client",
        "espressif/esp_codec_dev",
        "lvgl/lvgl",
        "espressif/esp-tflite-micro",
    ):
        assert name in requirements, name
    for name, spec in requirements.items():
        assert spec and "*" not in spec, f"{name}: unpinned"
        current = SimpleSpec(spec)
        assert not current.match(Version("999.0.0")), f"{name}: {spec} has no upper bound"
    assert not SimpleSpec(requirements["idf"]).match(Version("6.0.0"))
    assert SimpleSpec(requirements["idf"]).match(Version("5.4.1"))
    # The validator is real: a broken manifest is reported, not accepted.
    bad = tmp_path / "main"
    bad.mkdir()
    shutil.copy(FW / "main" / "idf_component.yml", bad / "idf_component.yml")
    with (bad / "idf_component.yml").open("a") as handle:
        handle.write("  espressif/broken:\n    version: 1\n    no_such_field: true\n")
    assert ManifestManager(bad, "main").validation_errors != []


# --- Kconfig -----------------------------------------------------------------------------


def test_kconfig_menu_parses_with_the_gateway_url_and_board_pins() -> None:
    kconfig = esp_kconfiglib.Kconfig(str(FW / "main" / "Kconfig.projbuild"), warn_to_stderr=False)
    assert kconfig.warnings == []
    symbols = {name: sym for name, sym in kconfig.syms.items() if name.startswith("MICROCLAW_")}
    assert symbols["MICROCLAW_GATEWAY_URL"].str_value.startswith("wss://")
    assert symbols["MICROCLAW_BOARD_ESP32_S3_BOX_3"].str_value == "y"
    pins = {name: int(sym.str_value) for name, sym in symbols.items() if name.startswith("MICROCLAW_PIN_")}
    assert len(pins) >= 14
    assert len(set(pins.values())) == len(pins), f"two functions on one GPIO: {pins}"
    assert all(0 <= pin <= 48 for pin in pins.values())
    # The ESP-IDF style checker (what Espressif's pre-commit hook runs) accepts the file.
    check = subprocess.run(
        [sys.executable, "-m", "kconfcheck", str(FW / "main" / "Kconfig.projbuild")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # Every option the C code reads is declared (CONFIG_MICROCLAW_* in main/).
    used = {
        name
        for source in (FW / "main").glob("*.[ch]")
        for name in re.findall(r"\bCONFIG_(MICROCLAW_[A-Z0-9_]+)", source.read_text())
    }
    assert "MICROCLAW_GATEWAY_URL" in used and "MICROCLAW_PIN_PTT" in used
    assert used <= set(symbols), used - set(symbols)


# --- main/: what can be checked without compiling it -------------------------------------


def test_the_app_component_lists_every_source_and_fills_every_hal_entry() -> None:
    cmake = (FW / "main" / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"([a-z0-9_]+\.c)"', cmake))
    assert listed == {p.name for p in (FW / "main").glob("*.c")}
    assert "microclaw_core" in cmake
    # Every function pointer of the core's mc_hal_t is set in hal_esp.c, and nothing else is:
    # a HAL entry added to the core and forgotten here would be a NULL call on the device.
    header = (FW / "components" / "microclaw_core" / "include" / "mc_hal.h").read_text()
    entries = set(re.findall(r"\(\*(\w+)\)\(", header)) | {"ctx"}
    hal_esp = (FW / "main" / "hal_esp.c").read_text()
    init = hal_esp[hal_esp.index("*hal = (mc_hal_t){") :]
    assigned = set(re.findall(r"^\s+\.(\w+) = ", init[: init.index("};")], flags=re.M))
    assert len(entries) >= 15 and assigned == entries
