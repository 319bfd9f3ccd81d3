"""The baseline BenchmarkFedAvg is compared with: Flower's NumPy FedAvg.

It runs the algorithm of flwr.server.strategy.aggregate.aggregate (scale
every update's layers by its sample count, reduce with np.add, divide by the
total) on the benchmark's shapes, 10 updates x 10M float32, and prints the
best of 5. Run it with Debian's interpreter, which has numpy:

    /usr/bin/python3 aggregators/testdata/flower_baseline.py

compare_flower.sh, next to it, runs it in turns with BenchmarkFedAvg10x10M
and prints the ratios.
"""
import time
from functools import reduce

import numpy as np

P, N = 10_000_000, 10


def aggregate(results):
    total = sum(n for _, n in results)
    weighted = [[layer * n for layer in weights] for weights, n in results]
    return [reduce(np.add, layers) / total for layers in zip(*weighted)]


results = [([np.full(P, i, dtype=np.float32) + (np.arange(P) % 7).astype(np.float32)], 100) for i in range(N)]
aggregate(results)
times = []
for _ in range(5):
    t = time.perf_counter()
    aggregate(results)
    times.append(time.perf_counter() - t)
best = min(times)
print(f"flower aggregate: {best * 1e3:.0f} ms/op, {N * P * 4 / best / 1e6:.0f} MB/s (best of 5)")
