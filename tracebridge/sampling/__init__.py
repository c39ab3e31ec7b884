"""Sampling: the stages every event passes before it is recorded.

Samplers keep a share of events (``TraceIdRatio`` consistently by trace, ``PerOperation`` and ``Adaptive``
by operation, ``Probability`` at random, ``ParentBased`` as the parent did); rate limiters cap events per
second (``RateLimiter``, ``KeyedRateLimiter``); filters select by level, name, category, duration or a
predicate (``Level``, ``Names``, ``Categories``, ``MinDuration``, ``Predicate``, ``Directives``);
``TailSampler`` keeps whole traces that failed or were slow. A ``Pipeline`` composes them::

    tracebridge.start(sampling=[Directives("myapp.db=3,*=2"), ParentBased(TraceIdRatio(0.1))])

Every stage counts what it kept and dropped (``tracebridge.stats()``); kept events carry their adjusted
count, so that ``tracebridge summary`` estimates true totals.
"""

from __future__ import annotations

from ._stage import SampledEvent, Stage
from .consistent import th_to_threshold, threshold, threshold_to_th
from .filters import Categories, Directives, Level, MinDuration, Names, Predicate
from .limiters import KeyedRateLimiter, RateLimiter
from .pipeline import Pipeline
from .samplers import Adaptive, AlwaysOff, AlwaysOn, ParentBased, PerOperation, Probability, TraceIdRatio
from .tail import TailSampler

__all__ = [
    "Adaptive",
    "AlwaysOff",
    "AlwaysOn",
    "Categories",
    "Directives",
    "KeyedRateLimiter",
    "Level",
    "MinDuration",
    "Names",
    "ParentBased",
    "PerOperation",
    "Pipeline",
    "Predicate",
    "Probability",
    "RateLimiter",
    "SampledEvent",
    "Stage",
    "TailSampler",
    "TraceIdRatio",
    "th_to_threshold",
    "threshold",
    "threshold_to_th",
]
