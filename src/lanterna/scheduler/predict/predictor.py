"""The latency predictor: TTFT and TPOT of a request on an endpoint, learned online, one model per served model.

One ``OnlineRidge`` per (model, TTFT|TPOT) over the features in ``features.py``. Why per model and not per
endpoint: llm-d assumes a homogeneous pool too, and a pool-wide model learns from every completion (an
endpoint-local one would learn 1/N as fast and know nothing of a new replica). Load differences between
endpoints are in the features, not in the weights.

Calling protocol: ``coefs(model)`` once per scheduling cycle, then ``ttft``/``tpot`` per candidate with those
coefficients (a dot product over a tuple: no allocation, no numpy on the hot path); ``observe(...)`` once
per completed request with the features the decision used and what was measured. Memory is bounded:
``max_models`` models (LRU), each two d x d matrices; no samples are kept.

Error accounting (``ErrorStats``): MAPE and mean absolute error since start, and an EWMA of the relative
error that the scorer uses as its uncertainty when it turns headroom into a probability of meeting an SLO.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from lanterna.scheduler.predict.features import TPOT_FEATURES, TPOT_NONNEG, TTFT_FEATURES, TTFT_NONNEG
from lanterna.scheduler.predict.rls import OnlineRidge

MIN_TTFT_S = 1e-3  # a prediction is never below one engine step
MIN_TPOT_S = 1e-4
REL_ERR_PRIOR = 0.3  # the relative error assumed before any sample (bootstrapped priors are rough)
REL_ERR_ALPHA = 0.02  # EWMA weight of one sample (~50-sample memory)


@dataclass(frozen=True, slots=True)
class LatencyPrior:
    """Starting weights (from the simulator's timing model, ``bootstrap.py``) and how far to trust them."""

    ttft: tuple[float, ...]
    tpot: tuple[float, ...]
    ridge: float = 1.0  # P0 = I / ridge after bootstrapping: larger = live samples move the weights more slowly


@dataclass(slots=True)
class ErrorStats:
    """Prediction error of one quantity since start (absolute percentage error = |pred - actual| / actual)."""

    count: int = 0
    ape_sum: float = 0.0
    abs_sum: float = 0.0
    rel_err: float = REL_ERR_PRIOR  # EWMA of the APE: the scorer's uncertainty

    def add(self, predicted: float, actual: float) -> float:
        err = abs(predicted - actual)
        ape = err / actual if actual > 0 else 0.0
        self.count += 1
        self.ape_sum += ape
        self.abs_sum += err
        self.rel_err += REL_ERR_ALPHA * (min(ape, 2.0) - self.rel_err)
        return ape

    @property
    def mape(self) -> float | None:
        return self.ape_sum / self.count if self.count else None

    @property
    def mean_abs_s(self) -> float | None:
        return self.abs_sum / self.count if self.count else None


@dataclass(slots=True)
class ModelLatency:
    ttft: OnlineRidge
    tpot: OnlineRidge
    ttft_err: ErrorStats = field(default_factory=ErrorStats)
    tpot_err: ErrorStats = field(default_factory=ErrorStats)


@dataclass(frozen=True, slots=True)
class Observed:
    """What one observation told: the predictions made at decision time, the measurements, their APEs."""

    ttft_pred_s: float
    ttft_s: float | None
    tpot_pred_s: float
    tpot_s: float | None
    ttft_ape: float | None
    tpot_ape: float | None


class LatencyPredictor:
    """Online TTFT/TPOT regression per model (see the module docstring for the protocol)."""

    def __init__(self, prior: LatencyPrior | None = None, *, forget: float = 0.998, max_models: int = 64) -> None:
        self.prior = prior
        self.forget = forget
        self.max_models = max_models
        self._models: OrderedDict[str, ModelLatency] = OrderedDict()

    def model(self, name: str) -> ModelLatency:
        m = self._models.get(name)
        if m is None:
            p = self.prior
            ridge = p.ridge if p is not None else 1e-3
            m = self._models[name] = ModelLatency(
                OnlineRidge(len(TTFT_FEATURES), theta0=p.ttft if p else None, ridge=ridge, forget=self.forget,
                            nonneg=TTFT_NONNEG),
                OnlineRidge(len(TPOT_FEATURES), theta0=p.tpot if p else None, ridge=ridge, forget=self.forget,
                            nonneg=TPOT_NONNEG))
            if len(self._models) > self.max_models:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(name)
        return m

    def coefs(self, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        m = self.model(name)
        return m.ttft.coef, m.tpot.coef

    @staticmethod
    def ttft(coef: tuple[float, ...], x: tuple[float, ...]) -> float:
        v = sum(c * f for c, f in zip(coef, x, strict=True))
        return v if v > MIN_TTFT_S else MIN_TTFT_S

    @staticmethod
    def tpot(coef: tuple[float, ...], x: tuple[float, ...]) -> float:
        v = sum(c * f for c, f in zip(coef, x, strict=True))
        return v if v > MIN_TPOT_S else MIN_TPOT_S

    def observe(self, name: str, ttft_x: tuple[float, ...], tpot_x: tuple[float, ...], ttft_s: float | None,
                tpot_s: float | None) -> Observed:
        """Learn from one completed request (either measurement may be missing) and account the error of the
        prediction the decision used (made *before* this update)."""
        m = self.model(name)
        tp, pp = self.ttft(m.ttft.coef, ttft_x), self.tpot(m.tpot.coef, tpot_x)
        ta = pa = None
        if ttft_s is not None and ttft_s > 0:
            ta = m.ttft_err.add(tp, ttft_s)
            m.ttft.update(ttft_x, ttft_s, 1.0 / (ttft_s * ttft_s))
        if tpot_s is not None and tpot_s > 0:
            pa = m.tpot_err.add(pp, tpot_s)
            m.tpot.update(tpot_x, tpot_s, 1.0 / (tpot_s * tpot_s))
        return Observed(tp, ttft_s, pp, tpot_s, ta, pa)

    def errors(self) -> dict[str, tuple[ErrorStats, ErrorStats]]:
        """Model name -> (TTFT, TPOT) error stats, for metrics and reports."""
        return {k: (m.ttft_err, m.tpot_err) for k, m in self._models.items()}

    def __len__(self) -> int:
        return len(self._models)
