#!/usr/bin/env node
// A random agent for gymhttp in JavaScript: what example_agent.py does, with
// Node 18+'s built-in fetch and no npm packages.
//
//   node examples/random_agent.js --env CartPole-v1 --episodes 5
//
// Flags: --url URL (default http://127.0.0.1:5000), --env ID, --episodes N,
// --seed N (seeds the first reset), --monitor DIR (episode stats on the
// server), --token TOKEN (default $GYMHTTP_TOKEN).
"use strict";

function parseArgs(argv) {
  const options = {
    url: "http://127.0.0.1:5000", env: "CartPole-v1", episodes: 5, seed: null, monitor: null,
    token: process.env.GYMHTTP_TOKEN || null,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, ""), value = argv[i + 1];
    if (!(name in options) || value === undefined) {
      throw new Error(`unknown flag or missing value: ${argv[i]} (flags: --url --env --episodes --seed --monitor --token)`);
    }
    options[name] = ["episodes", "seed"].includes(name) ? Number.parseInt(value, 10) : value;
  }
  return options;
}

class ServerError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

// fetch() failed: no reply came.  `answered` says whether this server had
// answered earlier requests (then the connection was lost, not never made).
class NoReply extends Error {
  constructor(what, cause, answered) {
    const why = cause ? [cause.code, cause.message].filter(Boolean).join(": ") : "";
    super(`${what}${why ? ` (${why})` : ""}`);
    this.answered = answered;
  }
}

function makeClient(base, token) {
  base = base.replace(/\/+$/, "");
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let answered = false;
  return async function request(method, path, body) {
    let reply;
    try {
      reply = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      throw new NoReply(`${method} ${path}`, error.cause || error, answered);
    }
    answered = true;
    if (reply.status === 204) return null;
    const data = await reply.json();
    if (!reply.ok) throw new ServerError(data.message, reply.status);
    return data;
  };
}

async function run({ url, env, episodes, seed, monitor, token }) {
  const request = makeClient(url, token);
  const { instance_id: id } = await request("POST", "/v1/envs/", seed === null ? { env_id: env } : { env_id: env, seed });
  const results = [];
  let finished = false;
  try {
    if (monitor) await request("POST", `/v1/envs/${id}/monitor/start/`, { directory: monitor, force: true });
    for (let episode = 1; episode <= episodes; episode++) {
      await request("POST", `/v1/envs/${id}/reset/`, {});
      let total = 0, length = 0, done = false;
      while (!done) {
        const { action } = await request("GET", `/v1/envs/${id}/action_space/sample`);
        const step = await request("POST", `/v1/envs/${id}/step/`, { action });
        total += step.reward;
        length += 1;
        done = step.terminated || step.truncated;
      }
      console.log(`episode ${episode}: return ${total.toFixed(2)}, length ${length}`);
      results.push([total, length]);
    }
    if (monitor) await request("POST", `/v1/envs/${id}/monitor/close/`);
    finished = true;
  } finally {
    try {
      await request("POST", `/v1/envs/${id}/close/`);
    } catch (error) {
      if (finished) throw error;  // else the error that stopped the run is the one to report
    }
  }
  return results;
}

async function main() {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    console.error(`error: ${error.message}`);
    return 2;
  }
  try {
    const results = await run(options);
    if (results.length) {
      const mean = results.reduce((sum, [r]) => sum + r, 0) / results.length;
      const steps = results.reduce((sum, [, n]) => sum + n, 0);
      console.log(`summary: ${results.length} episodes, mean return ${mean.toFixed(2)}, ${steps} steps`);
    }
    return 0;
  } catch (error) {
    if (error instanceof ServerError) {
      console.error(`error: the server refused: ${error.message} (HTTP ${error.status})`);
    } else if (error instanceof NoReply && error.answered) {
      console.error(`error: the server at ${options.url} stopped answering: ${error.message}`);
    } else if (error instanceof NoReply) {
      console.error(`error: no gymhttp server answered at ${options.url}: ${error.message}; start one with: python gymhttp.py`);
    } else {
      console.error(`error: ${error.stack || error}`);
    }
    return 1;
  }
}

main().then(code => { process.exitCode = code; });
