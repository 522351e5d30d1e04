"""Train a CartPole policy through client.RemoteVectorEnv, with numpy alone.

Start a server (``python gymhttp.py``), then:

    python examples/train_vector.py [--url URL] [--envs 16] [--generations 20]

The cross-entropy method on a linear policy: each generation tries one
candidate policy per sub-env, all of them in the same batched steps (one round
trip per step for every sub-env), and keeps the best quarter.  CartPole is
solved (a return of 500) within about ten generations.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from client import RemoteVectorEnv  # noqa: E402


def episode_returns(envs: RemoteVectorEnv, weights: np.ndarray, seed: int) -> np.ndarray:
    """One episode per sub-env, sub-env k acting with weights[k]: their returns."""
    observations, _ = envs.reset(seed=seed)
    returns = np.zeros(envs.num_envs)
    alive = np.ones(envs.num_envs, dtype=bool)
    while alive.any():
        actions = (np.einsum("ij,ij->i", observations, weights[:, :4]) + weights[:, 4] > 0).astype(np.int64)
        observations, rewards, terminations, truncations, _ = envs.step(actions)
        returns += rewards * alive  # what comes after an episode's end (the autoreset) is not counted
        alive &= ~(terminations | truncations)
    return returns


def train(url: str, num_envs: int, generations: int, seed: int = 0) -> list[float]:
    """Cross-entropy method; returns the best return of each generation."""
    rng = np.random.default_rng(seed)
    mean, std = np.zeros(5), np.ones(5)
    elite = max(2, num_envs // 4)
    best = []
    envs = RemoteVectorEnv(url, "CartPole-v1", num_envs, vectorization_mode="sync")
    try:
        for generation in range(generations):
            weights = mean + std * rng.standard_normal((num_envs, 5))
            returns = episode_returns(envs, weights, seed=seed + generation)
            top = weights[np.argsort(returns)[-elite:]]
            mean, std = top.mean(axis=0), top.std(axis=0) + 0.01
            best.append(float(returns.max()))
            print(f"generation {generation + 1}: best return {returns.max():.0f}, mean {returns.mean():.1f}", flush=True)
    finally:
        envs.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="server URL (default: %(default)s)")
    parser.add_argument("--envs", type=int, default=16, help="sub-envs, one candidate policy each (default: %(default)s)")
    parser.add_argument("--generations", type=int, default=20, help="generations (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything (default: %(default)s)")
    args = parser.parse_args(argv)
    train(args.url, args.envs, args.generations, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
