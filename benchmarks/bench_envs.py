"""Environments the benchmark registers on the server (via --import bench_envs),
and the Atari games of ale-py where it is installed."""

import time

import gymnasium
import numpy as np
from gymnasium import spaces


class AtariSizedEnv(gymnasium.Env):
    """A 210x160x3 uint8 frame per step, like an Atari game; no game behind it."""

    observation_space = spaces.Box(0, 255, (210, 160, 3), np.uint8)
    action_space = spaces.Discrete(6)

    def __init__(self):
        self._frames = np.random.default_rng(0).integers(0, 256, (2, 210, 160, 3), dtype=np.uint8)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._frames[0], {}

    def step(self, action):
        self._t += 1
        return self._frames[self._t & 1], 0.0, False, self._t >= 10_000, {}


class CostlyStepEnv(gymnasium.Env):
    """Two states and two actions; every step costs what ``work`` costs."""

    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def work(self) -> None:
        raise NotImplementedError

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        self.work()
        return 0, 0.0, False, False, {}


class SleepyEnv(CostlyStepEnv):
    """A slow simulator: every step sleeps 20 ms."""

    def work(self) -> None:
        time.sleep(0.02)


HEAVY_LOOP = 40_000  # about 2 ms of Python on the benchmark machine; the benchmark prints the real figure


def heavy_work() -> int:
    """CPU-bound Python, holding the GIL all along: what a simulator written in Python costs."""
    total = 0
    for i in range(HEAVY_LOOP):
        total += i * i
    return total


class HeavyEnv(CostlyStepEnv):
    """Every step costs about 2 ms of Python CPU (heavy_work)."""

    def work(self) -> None:
        heavy_work()


gymnasium.register("Bench/AtariSized-v0", entry_point=AtariSizedEnv, disable_env_checker=True)
gymnasium.register("Bench/Heavy-v0", entry_point=HeavyEnv, disable_env_checker=True)
gymnasium.register("Bench/Sleepy-v0", entry_point=SleepyEnv, disable_env_checker=True)

try:  # Atari, for the rows on real frames (ale-py ships its ROMs)
    import ale_py
except ImportError:
    ale_py = None
else:
    gymnasium.register_envs(ale_py)
