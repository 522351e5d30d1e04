"""Make docs/dashboard.png: a server with a few agents playing, shot by
headless Chromium.  Run from the repository root:

    python docs/make_screenshot.py

Needs chromium (apt-get install -y chromium).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymhttp  # noqa: E402
from client import Client  # noqa: E402


def cartpole(url: str, stop: threading.Event) -> None:
    """A balancing rule with exploration that fades: returns climb."""
    rng = random.Random(0)
    with Client(url) as c:
        iid = c.env_create("CartPole-v1", seed=0, kwargs={"render_mode": "rgb_array"})
        episode = 0
        while not stop.is_set():
            obs, _ = c.reset(iid)
            epsilon = max(0.02, 0.6 * 0.85 ** episode)
            done = False
            while not done and not stop.is_set():
                action = rng.randrange(2) if rng.random() < epsilon else int(obs[2] + 0.5 * obs[3] > 0)
                obs, _, terminated, truncated, _ = c.step(iid, action)
                done = terminated or truncated
                time.sleep(0.002)
            episode += 1


def pendulum(url: str, stop: threading.Event) -> None:
    with Client(url) as c:
        iid = c.env_create("Pendulum-v1", seed=1, kwargs={"render_mode": "rgb_array"})
        while not stop.is_set():
            obs, _ = c.reset(iid)
            done = False
            while not done and not stop.is_set():
                cos, sin, speed = obs
                torque = max(-2.0, min(2.0, -(8.0 * sin + 1.5 * speed) if cos > 0 else 2.0 * (1 if speed >= 0 else -1)))
                obs, _, terminated, truncated, _ = c.step(iid, [torque])
                done = terminated or truncated


def lake(url: str, stop: threading.Event) -> None:
    rng = random.Random(2)
    with Client(url) as c:
        iid = c.env_create("FrozenLake-v1", seed=2, kwargs={"render_mode": "ansi"})
        while not stop.is_set():
            c.reset(iid)
            done = False
            while not done and not stop.is_set():
                _, _, terminated, truncated, _ = c.step(iid, rng.choice([1, 2, 2, 1, 0, 3]))
                done = terminated or truncated
                time.sleep(0.05)


def vector(url: str, stop: threading.Event) -> None:
    with Client(url) as c:
        iid = c.env_create("CartPole-v1", num_envs=16, seed=3)
        obs, _ = c.reset(iid)
        while not stop.is_set():
            obs, *_ = c.step(iid, [int(o[2] + 0.3 * o[3] > 0) for o in obs])
            time.sleep(0.004)


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("needs chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    server = gymhttp.make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    for agent in (cartpole, pendulum, lake, vector):
        threading.Thread(target=agent, args=(server.url, stop), daemon=True).start()
        time.sleep(0.05)  # keep the cards in this order
    time.sleep(20)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.png")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        f"--user-data-dir={profile}", "--window-size=1280,1040", "--hide-scrollbars",
                        "--virtual-time-budget=2500", f"--screenshot={out}", server.url + "/"],
                       check=True, capture_output=True, timeout=120)
    stop.set()
    server.shutdown()
    server.server_close()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
