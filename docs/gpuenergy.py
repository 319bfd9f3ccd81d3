#!/usr/bin/env python3
"""The GPU check's two helpers (docs/gpucheck.sh runs them), stdlib only.

  gpuenergy.py log OUT.csv [INTERVAL_S]
      Logs NVML's total-energy counter of GPU 0 (millijoules since the
      driver loaded) every INTERVAL_S seconds (default 0.1) as
      "unix_seconds,joules" lines, until SIGTERM or SIGINT. It reads NVML
      through ctypes, independently of Cohort, so it is a witness.

  gpuenergy.py reconcile COHORT.db OUT.csv [PLAIN_EPOCH_SECONDS]
      For every arm run of the newest job in COHORT.db: the energy the arm
      logged (energy_joules summed over its rounds) against the device
      counter read over the arm's wall time (its run's start and end), and
      over the seconds its measurements covered; the share of each site
      task spent inside the trainer (trainer_seconds / task_seconds) from
      round 2 on; the centralized arm's epoch time against the plain
      PyTorch epoch, when given.
"""
import bisect
import ctypes
import signal
import sqlite3
import sys
import time


def log(path, interval=0.1):
    nvml = ctypes.CDLL("libnvidia-ml.so.1")
    if nvml.nvmlInit_v2() != 0:
        sys.exit("nvmlInit failed")
    dev = ctypes.c_void_p()
    if nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(dev)) != 0:
        sys.exit("no GPU 0")
    mj = ctypes.c_ulonglong()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with open(path, "w", buffering=1) as f:
        while not stop:
            rc = nvml.nvmlDeviceGetTotalEnergyConsumption(dev, ctypes.byref(mj))
            if rc == 0:
                f.write("%.3f,%.3f\n" % (time.time(), mj.value / 1000))
            time.sleep(interval)


def counter(path):
    ts, js = [], []
    for line in open(path):
        t, j = line.split(",")
        ts.append(float(t))
        js.append(float(j))
    def at(t):
        i = bisect.bisect_left(ts, t)
        if i <= 0:
            return js[0]
        if i >= len(ts):
            return js[-1]
        f = (t - ts[i - 1]) / (ts[i] - ts[i - 1])
        return js[i - 1] + f * (js[i] - js[i - 1])
    return at


def reconcile(db, path, plain=None):
    at = counter(path)
    c = sqlite3.connect(db)
    q = lambda sql, *a: c.execute(sql, a).fetchall()
    job = q("""SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
               WHERE t.key = 'cohort.kind' AND t.value = 'job' ORDER BY r.start_time DESC LIMIT 1""")[0][0]
    arms = q("""SELECT r.run_uuid, r.name, r.start_time, r.end_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
                WHERE t.key = 'mlflow.parentRunId' AND t.value = ? ORDER BY r.start_time""", job)

    def per_step(run, key):
        rows = q("SELECT step, value FROM metrics WHERE run_uuid = ? AND key = ? ORDER BY step, timestamp", run, key)
        return dict(rows)  # the latest point of each step

    print("arm          energy_J  device_J(wall)  diff%    busy_s  device_J(busy≈)  eval_J  wasted_J  above_idle_J  gpu%")
    for run, name, start, end in arms:
        e = sum(per_step(run, "energy_joules").values())
        dev = at(end / 1000) - at(start / 1000)
        busy = sum(per_step(run, "busy_seconds").values())
        wall = (end - start) / 1000
        ev = sum(per_step(run, "eval_energy_joules").values())
        wa = sum(per_step(run, "wasted_energy_joules").values())
        ai = sum(per_step(run, "energy_joules_above_idle").values())
        u = per_step(run, "gpu_utilization_percent")
        util = sum(u.values()) / len(u) if u else float("nan")
        print("%-12s %9.1f %15.1f %6.2f %8.1f %16.1f %7.1f %9.1f %13.1f %5.0f" % (
            name, e, dev, 100 * (e - dev) / dev if dev else float("nan"), busy,
            dev * busy / wall if wall else float("nan"), ev, wa, ai, util))
    print()
    print("arm          site        round  task_s  trainer_s  share")
    for run, name, _, _ in arms:
        for site, sname in q("""SELECT r.run_uuid, r.name FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
                                WHERE t.key = 'mlflow.parentRunId' AND t.value = ? ORDER BY r.name""", run):
            task, trainer = per_step(site, "task_seconds"), per_step(site, "trainer_seconds")
            shares = [trainer[s] / task[s] for s in sorted(task) if s >= 2 and s in trainer and task[s] > 0]
            if shares:
                print("%-12s %-11s  ≥2    %6.2f  %9.2f  min %.2f mean %.2f" % (
                    name, sname.split("/")[-1], sum(task[s] for s in task if s >= 2) / len(shares),
                    sum(trainer[s] for s in trainer if s >= 2) / len(shares), min(shares), sum(shares) / len(shares)))
    if plain:
        for run, name, _, _ in arms:
            kind = q("SELECT value FROM tags WHERE run_uuid = ? AND key = 'cohort.kind'", run)
            if kind and kind[0][0] == "centralized":
                rs = per_step(run, "round_seconds")
                later = [v for s, v in rs.items() if s >= 2]
                if later:
                    m = sum(later) / len(later)
                    print("\ncentralized epoch %.2f s (mean of epochs ≥ 2) against plain PyTorch %.2f s: %.2f×" % (m, plain, m / plain))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "log":
        log(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.1)
    elif len(sys.argv) >= 4 and sys.argv[1] == "reconcile":
        reconcile(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else None)
    else:
        sys.exit(__doc__)
