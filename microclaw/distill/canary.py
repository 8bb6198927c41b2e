"""The canary verdict for a new model bundle, as a pure function.

Devices in the canary cohort report, per device: utterances routed, confirmations the model
missed (a pending yes/no/cancel that it did not route to ``confirm``, as the device learns when
the user repeats the answer or the host resolves it), inference latency (p95, ms) and crashes
(reboots / crash loops since activation). `verdict` compares the canary with the baseline (the
devices still on the previous model) and answers ``halt_rollback`` when any of these regress past
the policy, ``promote`` when enough devices reported and nothing did, and ``wait`` otherwise.

`ota_limits` turns a policy and a baseline into the gateway's per-result limits
(`microclaw.gateway.ota.CanaryLimits`), so each ``ota.result`` is judged by the same numbers and
the gateway's automatic halt stops offering the release; a halted release the device runs is
rolled back to its other slot (`microclaw.gateway.otastore.halted_running`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from microclaw.gateway.ota import CanaryLimits


@dataclass(frozen=True)
class DeviceReport:
    device_id: str
    utterances: int
    confirms: int  # pending confirmations answered
    confirm_misses: int
    latency_p95_ms: float
    crashes: int


@dataclass(frozen=True)
class CanaryPolicy:
    max_confirm_miss_rate: float = 0.05  # absolute, over all canary confirmations
    max_confirm_miss_increase: float = 0.02  # over the baseline's rate
    max_latency_ratio: float = 1.25  # canary p95 / baseline p95
    max_latency_ms: float = 150.0  # absolute ceiling of any device's p95
    max_crashing_devices: int = 0  # devices with any crash since activation
    min_devices: int = 3
    min_confirms: int = 20


@dataclass(frozen=True)
class Verdict:
    action: Literal["wait", "promote", "halt_rollback"]
    reasons: tuple[str, ...]

    @property
    def rollback(self) -> bool:
        return self.action == "halt_rollback"


def _miss_rate(reports: Sequence[DeviceReport]) -> float | None:
    confirms = sum(r.confirms for r in reports)
    return sum(r.confirm_misses for r in reports) / confirms if confirms else None


def _p95(reports: Sequence[DeviceReport]) -> float | None:
    values = sorted(r.latency_p95_ms for r in reports if r.utterances)
    return values[len(values) // 2] if values else None  # the median device's p95


def verdict(
    canary: Sequence[DeviceReport], baseline: Sequence[DeviceReport], policy: CanaryPolicy = CanaryPolicy()
) -> Verdict:
    reasons: list[str] = []
    crashing = [r.device_id for r in canary if r.crashes > 0]
    if len(crashing) > policy.max_crashing_devices:
        reasons.append(f"{len(crashing)} canary device(s) crashed: {', '.join(sorted(crashing)[:5])}")
    rate = _miss_rate(canary)
    confirms = sum(r.confirms for r in canary)
    if rate is not None and confirms >= policy.min_confirms:
        base = _miss_rate(baseline)
        if rate > policy.max_confirm_miss_rate:
            reasons.append(f"confirm miss rate {rate:.1%} > {policy.max_confirm_miss_rate:.1%}")
        elif base is not None and rate - base > policy.max_confirm_miss_increase:
            reasons.append(f"confirm miss rate {rate:.1%} vs baseline {base:.1%}")
    worst = max((r.latency_p95_ms for r in canary if r.utterances), default=None)
    if worst is not None and worst > policy.max_latency_ms:
        reasons.append(f"latency p95 {worst:g} ms > {policy.max_latency_ms:g} ms")
    median, base_median = _p95(canary), _p95(baseline)
    if median is not None and base_median and median / base_median > policy.max_latency_ratio:
        reasons.append(f"latency p95 {median:g} ms vs baseline {base_median:g} ms")
    if reasons:
        return Verdict("halt_rollback", tuple(reasons))
    if len(canary) < policy.min_devices or confirms < policy.min_confirms:
        return Verdict("wait", (f"{len(canary)} device(s), {confirms} confirmation(s) reported so far",))
    return Verdict("promote", ("no regression",))


def ota_limits(policy: CanaryPolicy, baseline: Sequence[DeviceReport]) -> CanaryLimits:
    """The per-result limits the gateway applies to each ``ota.result`` of this release."""
    from microclaw.gateway.ota import CanaryLimits

    base = _p95(baseline)
    latency = (
        policy.max_latency_ms if base is None else min(policy.max_latency_ms, base * policy.max_latency_ratio)
    )
    return CanaryLimits(
        max_boot_failures=0,
        max_confirm_miss_rate=policy.max_confirm_miss_rate,
        max_latency_ms=latency,
    )
