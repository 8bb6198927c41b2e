"""The canary verdict for a new model bundle, as a pure function.

Devices report per release what ``ota.result`` carries (docs/device-protocol.md): whether the
install and self-test worked, ``confirm_miss_rate`` (pending yes/no/cancel answers the model did
not route to ``confirm``, learnt when the user repeats the answer or the host resolves it),
``latency_ms`` (p95 inference) and ``boot_failures`` (crash loops since activation). `verdict`
compares the canary cohort with the baseline (devices still on the previous model) and answers
``halt_rollback`` when any of these regress past the policy, ``promote`` when enough devices
reported and nothing did, ``wait`` otherwise. `reports_from_results` turns the gateway's stored
results into `DeviceReport`s; `microclaw distill canary --release ID [--apply]` prints the
verdict and, with ``--apply``, halts a bad release (the gateway then tells devices running it
to switch back to their other slot).

`ota_limits` turns a policy and a baseline into the gateway's per-result limits
(`microclaw.gateway.ota.CanaryLimits`), so each ``ota.result`` is judged by the same numbers and
the gateway's automatic halt can stop a release before anyone runs `verdict`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from microclaw.gateway.ota import CanaryLimits
    from microclaw.store.ota import ResultRow


@dataclass(frozen=True)
class DeviceReport:
    device_id: str
    ok: bool = True  # installed and passed its self-test
    confirm_miss_rate: float | None = None
    latency_ms: float | None = None
    boot_failures: int = 0


@dataclass(frozen=True)
class CanaryPolicy:
    max_confirm_miss_rate: float = 0.05  # mean over the canary devices that report it
    max_confirm_miss_increase: float = 0.02  # over the baseline's mean
    max_latency_ratio: float = 1.25  # canary median p95 / baseline median p95
    max_latency_ms: float = 150.0  # ceiling for any one device's p95
    max_failed_devices: int = 0  # devices whose install/self-test failed or that crash-looped
    min_devices: int = 3


@dataclass(frozen=True)
class Verdict:
    action: Literal["wait", "promote", "halt_rollback"]
    reasons: tuple[str, ...]

    @property
    def rollback(self) -> bool:
        return self.action == "halt_rollback"


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def verdict(
    canary: Sequence[DeviceReport], baseline: Sequence[DeviceReport], policy: CanaryPolicy | None = None
) -> Verdict:
    policy = policy or CanaryPolicy()
    reasons: list[str] = []
    failed = sorted(r.device_id for r in canary if not r.ok or r.boot_failures > 0)
    if len(failed) > policy.max_failed_devices:
        reasons.append(f"{len(failed)} canary device(s) failed or crashed: {', '.join(failed[:5])}")
    rate, base_rate = _mean(r.confirm_miss_rate for r in canary), _mean(r.confirm_miss_rate for r in baseline)
    if rate is not None and rate > policy.max_confirm_miss_rate:
        reasons.append(f"confirm miss rate {rate:.1%} > {policy.max_confirm_miss_rate:.1%}")
    elif rate is not None and base_rate is not None and rate - base_rate > policy.max_confirm_miss_increase:
        reasons.append(f"confirm miss rate {rate:.1%} vs baseline {base_rate:.1%}")
    worst = max((r.latency_ms for r in canary if r.latency_ms is not None), default=None)
    if worst is not None and worst > policy.max_latency_ms:
        reasons.append(f"latency p95 {worst:g} ms > {policy.max_latency_ms:g} ms")
    median, base_median = _median(r.latency_ms for r in canary), _median(r.latency_ms for r in baseline)
    if median is not None and base_median and median / base_median > policy.max_latency_ratio:
        reasons.append(f"latency p95 {median:g} ms vs baseline {base_median:g} ms")
    if reasons:
        return Verdict("halt_rollback", tuple(reasons))
    if len(canary) < policy.min_devices:
        return Verdict("wait", (f"{len(canary)} of {policy.min_devices} canary device(s) reported",))
    return Verdict("promote", ("no regression",))


def reports_from_results(rows: Iterable[ResultRow]) -> list[DeviceReport]:
    """The gateway's stored ``ota.result`` rows (one per device) as `DeviceReport`s."""
    out = []
    for row in rows:
        metrics = row.metrics or {}
        miss, latency = metrics.get("confirm_miss_rate"), metrics.get("latency_ms")
        out.append(
            DeviceReport(
                device_id=row.device_id,
                ok=row.ok,
                confirm_miss_rate=float(miss) if miss is not None else None,
                latency_ms=float(latency) if latency is not None else None,
                boot_failures=int(metrics.get("boot_failures", 0) or 0),
            )
        )
    return out


def ota_limits(policy: CanaryPolicy, baseline: Sequence[DeviceReport]) -> CanaryLimits:
    """The per-result limits the gateway applies to each ``ota.result`` of this release."""
    from microclaw.gateway.ota import CanaryLimits

    base = _median(r.latency_ms for r in baseline)
    ceiling = policy.max_latency_ms
    latency = ceiling if base is None else min(ceiling, base * policy.max_latency_ratio)
    return CanaryLimits(
        max_boot_failures=0,
        max_confirm_miss_rate=policy.max_confirm_miss_rate,
        max_latency_ms=latency,
    )
