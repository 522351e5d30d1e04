"""Stable-Baselines3's PPO on envs that run on a gymhttp server.

Needs Stable-Baselines3 (``pip install stable-baselines3``, which brings
PyTorch); start a server (``python gymhttp.py``), then:

    python examples/sb3_ppo.py [--url URL] [--envs 8] [--timesteps 50000]
    python examples/sb3_ppo.py --compare      # rollout speed: RemoteVecEnv against 8 RemoteEnvs in a DummyVecEnv

``RemoteVecEnv`` below is the small adapter: an SB3 ``VecEnv`` on one
``client.RemoteVectorEnv``, so that each PPO rollout step is one round trip
for all the sub-envs.  SB3 resets a sub-env as soon as it is done and wants
its last observation in ``infos[i]["terminal_observation"]``: that is
Gymnasium's SameStep autoreset, whose ``final_obs`` it is.  SB3 logs
``rollout/ep_rew_mean`` from ``infos[i]["episode"]``, which Gymnasium's
``RecordEpisodeStatistics`` wrapper, applied on the server to each sub-env,
puts in each ended episode's final info.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from client import RemoteEnv, RemoteVectorEnv  # noqa: E402


class RemoteVecEnv(VecEnv):
    """An SB3 VecEnv backed by one vector instance on a gymhttp server."""

    def __init__(self, url: str, env_id: str, num_envs: int, **make_kwargs: Any):
        self.envs = RemoteVectorEnv(url, env_id, num_envs, vectorization_mode="sync", wrappers=["RecordEpisodeStatistics"],
                                    vector_kwargs={"autoreset_mode": "SameStep"}, **make_kwargs)
        super().__init__(num_envs, self.envs.single_observation_space, self.envs.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = [s for s in self._seeds if s is not None]
        observations, _ = self.envs.reset(seed=seeds[0] if seeds else None)
        self._reset_seeds()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple:
        observations, rewards, terminations, truncations, info = self.envs.step(self._actions)
        dones = terminations | truncations
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for k in np.flatnonzero(dones):
            infos[k]["terminal_observation"] = info["final_obs"][k]
            infos[k]["TimeLimit.truncated"] = bool(truncations[k] and not terminations[k])
            episode = info["final_info"]["episode"]  # RecordEpisodeStatistics', one entry per sub-env
            infos[k]["episode"] = {"r": float(episode["r"][k]), "l": int(episode["l"][k]), "t": float(episode["t"][k])}
        return observations, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.envs.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list:
        return [getattr(self.envs, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        raise NotImplementedError("the sub-envs live on the server")

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list:
        raise NotImplementedError("the sub-envs live on the server")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list:
        return [False] * len(self._get_indices(indices))


class RolloutClock(BaseCallback):
    """Time spent collecting rollouts (policy and envs), not training."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds, self.steps, self._started = 0.0, 0, 0.0

    def _on_rollout_start(self) -> None:
        self._started = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._started
        self.steps += self.model.n_steps * self.model.n_envs

    def _on_step(self) -> bool:
        return True


def rollout_speed(env: VecEnv, timesteps: int) -> float:
    """Env-steps a second of PPO's rollouts on ``env``."""
    clock = RolloutClock()
    PPO("MlpPolicy", env, n_steps=256, seed=0, device="cpu").learn(timesteps, callback=clock)
    env.close()
    return clock.steps / clock.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="server URL (default: %(default)s)")
    parser.add_argument("--envs", type=int, default=8, help="sub-envs (default: %(default)s)")
    parser.add_argument("--timesteps", type=int, default=50_000, help="PPO timesteps (default: %(default)s)")
    parser.add_argument("--compare", action="store_true", help="measure rollout speed both ways (default: off)")
    args = parser.parse_args(argv)
    if args.compare:
        vector = rollout_speed(RemoteVecEnv(args.url, "CartPole-v1", args.envs), args.timesteps)
        dummy = rollout_speed(DummyVecEnv([lambda: RemoteEnv(args.url, "CartPole-v1")] * args.envs), args.timesteps)
        print(f"PPO rollouts, {args.envs} CartPole envs: RemoteVecEnv {vector:,.0f} env-steps/s, "
              f"{args.envs} RemoteEnvs in a DummyVecEnv {dummy:,.0f} env-steps/s ({vector / dummy:.1f} x)")
        return 0
    env = RemoteVecEnv(args.url, "CartPole-v1", args.envs)
    model = PPO("MlpPolicy", env, seed=0, device="cpu", verbose=1).learn(args.timesteps)
    returns = evaluate(model, env, episodes=20)
    print(f"after {args.timesteps} timesteps: mean return {np.mean(returns):.1f} over {len(returns)} episodes "
          f"(min {min(returns):.0f}, max {max(returns):.0f})")
    env.close()
    return 0


def evaluate(model: PPO, env: VecEnv, episodes: int) -> list[float]:
    """The returns of the first ``episodes`` episodes that end, each counted
    from its own start: the ones still running when enough have ended count
    for nothing."""
    observations = env.reset()
    running = np.zeros(env.num_envs)
    returns: list[float] = []
    while len(returns) < episodes:
        actions, _ = model.predict(observations, deterministic=True)
        observations, rewards, dones, _ = env.step(actions)
        running += rewards
        for k in np.flatnonzero(dones):
            returns.append(float(running[k]))
            running[k] = 0.0
    return returns[:episodes]


if __name__ == "__main__":
    sys.exit(main())
