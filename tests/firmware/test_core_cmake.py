"""The core's CMakeLists.txt in both of its modes, with Debian's cmake:

- plain CMake (host, any non-ESP-IDF project): configures and builds the static library;
- as an ESP-IDF component: ESP-IDF cannot be installed here, so a stand-in
  ``idf_component_register`` (the one thing the file calls in that mode) records its SRCS and
  INCLUDE_DIRS and builds them the way ESP-IDF would, as ``COMPONENT_LIB``; every listed source
  must exist and compile, and the public include directory must be exported.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.firmware.core_build import CORE, require_tools

STAND_IN = """
cmake_minimum_required(VERSION 3.16)
project(idf_stand_in C)
set(ESP_PLATFORM 1)
function(idf_component_register)
    cmake_parse_arguments(ARG "" "" "SRCS;INCLUDE_DIRS;PRIV_INCLUDE_DIRS;REQUIRES;PRIV_REQUIRES" ${ARGN})
    list(TRANSFORM ARG_SRCS PREPEND "${CORE}/")
    add_library(__idf_microclaw_core STATIC ${ARG_SRCS})
    list(TRANSFORM ARG_INCLUDE_DIRS PREPEND "${CORE}/")
    list(TRANSFORM ARG_PRIV_INCLUDE_DIRS PREPEND "${CORE}/")
    target_include_directories(__idf_microclaw_core
        PUBLIC ${ARG_INCLUDE_DIRS} PRIVATE ${ARG_PRIV_INCLUDE_DIRS})
    set(COMPONENT_LIB __idf_microclaw_core PARENT_SCOPE)
    file(WRITE "${CMAKE_BINARY_DIR}/registered.txt" "${ARG_SRCS};${ARG_INCLUDE_DIRS}")
endfunction()
set(CMAKE_CURRENT_SOURCE_DIR "${CORE}")
include("${CORE}/CMakeLists.txt")
"""


def _cmake(*args: str) -> None:
    done = subprocess.run(["cmake", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_plain_cmake_builds_the_library(tmp_path: Path) -> None:
    require_tools("cmake", "gcc")
    _cmake("-S", str(CORE), "-B", str(tmp_path), "-DCMAKE_C_FLAGS=-Werror")
    _cmake("--build", str(tmp_path), "-j", "2")
    assert (tmp_path / "libmicroclaw_core.a").stat().st_size > 0


def test_esp_idf_component_registration(tmp_path: Path) -> None:
    require_tools("cmake", "gcc")
    project = tmp_path / "project"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(STAND_IN.replace("${CORE}", str(CORE)))
    _cmake("-S", str(project), "-B", str(tmp_path / "build"))
    registered = (tmp_path / "build" / "registered.txt").read_text().split(";")
    sources = [Path(p) for p in registered if p.endswith(".c")]
    assert {s.name for s in sources} >= {"mc_device.c", "mc_ota.c", "monocypher.c", "monocypher-ed25519.c"}
    assert all(s.is_file() for s in sources)
    # every core source is registered (a new module forgotten in CMakeLists.txt fails here)
    assert {s.name for s in (CORE / "src").glob("*.c")} <= {s.name for s in sources}
    assert str(CORE / "include") in registered
    _cmake("--build", str(tmp_path / "build"), "-j", "2")
