"""A random agent, in the spirit of gym-http-api's example_agent.py.

Start a server first (``python gymhttp.py``), then:

    python example_agent.py --env CartPole-v1 --episodes 5
    python example_agent.py --render --episodes 20    # slow enough to watch on the dashboard

Standard library only: it talks to the server through client.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from client import Client, ServerError


def run(url: str, env_id: str, episodes: int, monitor: str | None = None, seed: int | None = None,
        token: str | None = None, max_steps: int = 100_000, fps: float | None = None) -> list[tuple[float, int]]:
    """Play ``episodes`` episodes with random actions; returns (return, length) each.

    With ``fps``, the env renders ``rgb_array`` frames and steps at most
    ``fps`` times a second, so that the server's dashboard shows it live.
    """
    results = []
    with Client(url, token=token) as client:
        instance_id = client.env_create(env_id, seed=seed, kwargs={"render_mode": "rgb_array"} if fps else None)
        try:
            if seed is not None:  # the server's action space too, so that a seeded run plays the same episodes
                client.space_sample(instance_id, "action", seed=seed)
            if monitor:
                client.env_monitor_start(instance_id, monitor, force=True)
            for episode in range(episodes):
                client.reset(instance_id)
                total, length, done = 0.0, 0, False
                while not done and length < max_steps:
                    if fps:
                        time.sleep(1 / fps)
                    action = client.env_action_space_sample(instance_id)
                    _, reward, terminated, truncated, _ = client.step(instance_id, action)
                    total += reward
                    length += 1
                    done = terminated or truncated
                print(f"episode {episode + 1}: return {total:.2f}, length {length}", flush=True)
                results.append((total, length))
            if monitor:
                client.env_monitor_close(instance_id)
        except BaseException:
            try:  # the error that stopped us is the one to report, not close's (the server may be gone)
                client.env_close(instance_id)
            except (ServerError, ConnectionError):
                pass
            raise
        client.env_close(instance_id)
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(description="Run a random agent against a gymhttp server.")
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="server URL (default: %(default)s)")
    parser.add_argument("--env", default="CartPole-v1", help="environment id (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes to play (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first reset and of the actions, so that a run repeats (default: %(default)s)")
    parser.add_argument("--monitor", metavar="DIR", default=None, help="record episode stats into DIR on the server (default: off)")
    parser.add_argument("--token", default=os.environ.get("GYMHTTP_TOKEN"), help="server token (default: $GYMHTTP_TOKEN)")
    parser.add_argument("--render", action="store_true",
                        help="render rgb_array frames and step at --fps, to watch on the dashboard (default: off)")
    parser.add_argument("--fps", type=float, default=30.0, help="steps a second with --render (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        results = run(args.url, args.env, args.episodes, args.monitor, args.seed, args.token,
                      fps=args.fps if args.render else None)
    except ConnectionError as exc:
        print(f"error: no gymhttp server answered at {args.url} ({exc}); start one with: python gymhttp.py", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"error: the server refused: {exc.message} (HTTP {exc.status_code})", file=sys.stderr)
        return 1
    if results:
        mean = sum(r for r, _ in results) / len(results)
        steps = sum(n for _, n in results)
        print(f"summary: {len(results)} episodes, mean return {mean:.2f}, {steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
