"""Training in numpy: hashed n-grams -> one ReLU hidden layer -> three softmax heads.

The heads share one output layer whose logits are the intent, route and confirm classes side by
side (`head_slices`); the loss is the sum of the three cross-entropies. Adam on mini-batches,
float32, every random draw from one ``numpy.random.Generator`` seeded by ``TrainConfig.seed``:
the same data and config give the same weights, byte for byte (single-threaded BLAS is not
needed: the matrix products are of fixed shapes and order).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from microclaw.distill.labels import HEADS

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 1024  # hashed feature buckets (input size)
    hidden: int = 48
    epochs: int = 60
    batch: int = 64
    lr: float = 0.004
    weight_decay: float = 1e-5
    dropout: float = 0.3  # input feature dropout while training (features dropped at random)
    route_weight: float = 2.0  # the route head's loss weight (intent and confirm weigh 1)
    seed: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FloatModel:
    w1: np.ndarray  # [hidden, dim]
    b1: np.ndarray  # [hidden]
    w2: np.ndarray  # [outputs, hidden]
    b2: np.ndarray  # [outputs]

    def hidden(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.maximum(x.astype(np.float32) @ self.w1.T + self.b1, 0.0)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.hidden(x) @ self.w2.T + self.b2


def head_slices() -> dict[str, slice]:
    """Head -> its columns in the output layer."""
    out: dict[str, slice] = {}
    start = 0
    for head, names in HEADS.items():
        out[head] = slice(start, start + len(names))
        start += len(names)
    return out


def n_outputs() -> int:
    return sum(len(names) for names in HEADS.values())


def predict(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Head -> argmax class index per row (ties go to the lowest index, as on the device)."""
    return {head: logits[:, cols].argmax(axis=1) for head, cols in head_slices().items()}


def train(x: np.ndarray, y: dict[str, np.ndarray], config: TrainConfig) -> FloatModel:
    """Fit on int8 0/1 features ``x`` and per-head class indices ``y``."""
    import numpy as np

    rng = np.random.default_rng(config.seed)
    n, dim = x.shape
    if dim != config.dim:
        raise ValueError(f"features have {dim} columns, the config says {config.dim}")
    out = n_outputs()
    params = {
        "w1": (rng.standard_normal((config.hidden, dim)) * np.sqrt(2.0 / 24)).astype(np.float32),
        "b1": np.zeros(config.hidden, np.float32),
        "w2": (rng.standard_normal((out, config.hidden)) * np.sqrt(1.0 / config.hidden)).astype(np.float32),
        "b2": np.zeros(out, np.float32),
    }
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    xf = x.astype(np.float32)
    slices = head_slices()
    targets = np.zeros((n, out), np.float32)
    for head, cols in slices.items():
        targets[np.arange(n), cols.start + y[head]] = 1.0
    step = 0
    for _ in range(config.epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch):
            idx = order[start : start + config.batch]
            xb, tb = xf[idx], targets[idx]
            if config.dropout:
                keep = rng.random(xb.shape, dtype=np.float32) >= config.dropout
                xb = xb * keep / np.float32(1 - config.dropout)
            pre = xb @ params["w1"].T + params["b1"]
            hid = np.maximum(pre, 0.0)
            logits = hid @ params["w2"].T + params["b2"]
            grad_logits = np.empty_like(logits)
            for head, cols in slices.items():
                z = logits[:, cols] - logits[:, cols].max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                weight = np.float32(config.route_weight if head == "route" else 1.0)
                grad_logits[:, cols] = (p - tb[:, cols]) * weight
            grad_logits /= len(idx)
            grads = {
                "w2": grad_logits.T @ hid,
                "b2": grad_logits.sum(axis=0),
            }
            grad_hid = (grad_logits @ params["w2"]) * (pre > 0)
            grads["w1"] = grad_hid.T @ xb
            grads["b1"] = grad_hid.sum(axis=0)
            step += 1
            for key, value in params.items():
                g = grads[key] + config.weight_decay * value
                m, v = moments[key]
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * g * g
                m_hat = m / (1 - beta1**step)
                v_hat = v / (1 - beta2**step)
                value -= (config.lr * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
    return FloatModel(**params)
