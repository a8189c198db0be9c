"""The interleaved A/B loop the micro-benchmarks share: warm both, then rounds of 10 runs each in
alternating order, and the median of per-round ratios b/a with its interquartile range."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def ratio_b_over_a(run_a: Callable[[], object], run_b: Callable[[], object], rounds: int) -> str:
    for run in (run_a, run_b):
        for _ in range(3):
            run()
    ratios = []
    for i in range(rounds):
        t = {}
        for name, run in (("a", run_a), ("b", run_b)) if i % 2 == 0 else (("b", run_b), ("a", run_a)):
            t0 = time.perf_counter()
            for _ in range(10):
                run()
            t[name] = time.perf_counter() - t0
        ratios.append(t["b"] / t["a"])
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return f"{med:.2f} [{q1:.2f}–{q3:.2f}]"
