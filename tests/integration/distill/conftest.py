"""The OTA tests' gateway rig (a gateway process with a signing key) for the bundle's OTA test."""

from tests.integration.gateway.test_ota import rig  # noqa: F401 - a fixture, used by name
