"""The device gateway: ESP32-S3 terminals talk to the assistant over mutual TLS.

One module per concern: `ca` (the local device CA and the gateway's server certificate),
`protocol` (frames, limits, validation), `pairing` (code -> claim -> token -> CSR ->
certificate), `devicelog` (the durable per-device log of host -> device events), `sessions`
(the WebSocket server: pairing for unauthenticated peers, hello/replay/stream/ack for paired
ones), `ota` (manifest signatures and rollout rules, pure functions), `otastore` (the signing
key, publishing, rollouts, results), `otaserve` (manifests and images over HTTPS on the same
port, OTA frames in sessions) and `simulator` (a device speaking the exact protocol, for tests
and benchmarks). The process entry point is
`microclaw.cli.gateway`. See docs/device-protocol.md.
"""
