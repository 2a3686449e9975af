"""Online ridge regression by weighted recursive least squares (RLS) with exponential forgetting.

Why RLS: the predictor must learn from every completed request at O(d^2) cost with O(d^2) memory, no
sample buffer and no retraining pass (llm-d retrains XGBoost in a sidecar; we want neither). With ``d``
around 6-9 features one update is two small matrix-vector products. Forgetting (``forget`` < 1) lets the
model follow a replica whose behaviour drifts; the covariance trace is capped so that a long run of
identical inputs (no excitation) cannot wind ``P`` up until one odd sample throws the weights away.

Each sample carries a weight: the predictor passes ``1 / y^2`` so the fit minimises *relative* error
(what MAPE and SLO headroom care about) rather than letting long requests dominate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


class OnlineRidge:
    """theta minimising sum_i forget^(n-i) w_i (y_i - theta . x_i)^2 + ridge |theta - theta0|^2.

    ``P`` starts at ``I / ridge``: a larger ``ridge`` trusts the starting weights ``theta0`` longer."""

    __slots__ = ("dim", "forget", "max_trace", "theta", "P", "coef", "num_updates", "nonneg")

    def __init__(self, dim: int, *, theta0: Sequence[float] | None = None, ridge: float = 1e-3,
                 forget: float = 0.998, max_trace: float = 1e6, nonneg: Sequence[int] = ()) -> None:
        if not 0.0 < forget <= 1.0:
            raise ValueError("forget must be in (0, 1]")
        self.dim = dim
        self.forget = forget
        self.max_trace = max_trace
        self.theta: Vector = np.zeros(dim) if theta0 is None else np.asarray(theta0, dtype=np.float64).copy()
        self.P: Vector = np.eye(dim) / ridge
        self.nonneg = tuple(nonneg)
        self.coef: tuple[float, ...] = self._coef()  # a plain tuple: the hot path reads this
        self.num_updates = 0

    def _coef(self) -> tuple[float, ...]:
        """The weights predictions use: ``theta`` with the ``nonneg`` entries clamped at 0 (the fit itself stays
        unconstrained, so a weight that wandered below 0 comes back as soon as the data says so)."""
        c = self.theta.tolist()
        for i in self.nonneg:
            if c[i] < 0.0:
                c[i] = 0.0
        return tuple(c)

    def update(self, x: Sequence[float], y: float, weight: float = 1.0) -> None:
        """One sample; ``weight`` > 0 scales its squared error."""
        s = weight ** 0.5
        xv = np.asarray(x, dtype=np.float64) * s
        ys = y * s
        px = self.P @ xv
        denom = self.forget + float(xv @ px)
        if denom <= 0.0 or not np.isfinite(denom):
            return
        k = px / denom
        self.theta += k * (ys - float(xv @ self.theta))
        P = (self.P - np.outer(k, px)) / self.forget
        self.P = (P + P.T) * 0.5  # NOTE: kept symmetric, or rounding drifts it indefinite and the fit diverges
        tr = float(np.trace(self.P))
        if tr > self.max_trace:
            self.P *= self.max_trace / tr
        self.coef = self._coef()
        self.num_updates += 1

    def inflate(self, factor: float) -> None:
        """Trust the current weights less (after bootstrapping on a model, before live samples)."""
        self.P *= factor

    def predict(self, x: Sequence[float]) -> float:
        return float(sum(c * v for c, v in zip(self.coef, x, strict=True)))
