"""Running wrk (bounded in time, loopback only) and reading its summary: req/s, p50, p99, errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.scenarios import Step

INSTALL_HINT = "wrk is not installed: apt-get install wrk (Debian/Ubuntu)"


def wrk_path() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Completed cycles of a multi-step scenario (None for single requests).
    ops: int | None = None

    @property
    def throughput(self) -> float:
        """Operations per second: requests, or whole cycles for a multi-step scenario."""
        return self.ops / self.seconds if self.ops is not None else self.rps


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> WrkResult:
    """Reads wrk's --latency summary (and the counters printed by the cycle script)."""
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", output, re.M))
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (done and rps and "50" in percentiles and "99" in percentiles):
        raise ValueError("unreadable wrk output:\n" + output)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket:
        errors += sum(int(g) for g in socket.groups())
    if int(done.group(1)) == 0:
        errors += 1  # not one answer within the run
    ops = None
    counters = re.search(r"^BENCH ops=(\d+) failures=(\d+)", output, re.M)
    if counters:
        ops = int(counters.group(1))
        errors += int(counters.group(2))
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2) + done.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        errors=errors,
        ops=ops,
    )


def _lua(value: object) -> str:
    # A JSON string literal is a valid Lua string literal for the characters used here (no \u escapes).
    return json.dumps(value, ensure_ascii=True)


def cycle_script(steps: list[Step], nonce: str) -> str:
    """A wrk script that runs `steps` in a loop on each connection (one connection per wrk thread, so the
    per-thread state is the connection's); `{id}` in a path is the previous answer's `"id"`, `{unique}` in a
    body a value unique to the request. A step that answers another status than expected restarts the cycle
    and counts as a failure."""
    lines = ["local steps = {"]
    for step in steps:
        headers = ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in step.headers.items())
        body = _lua(step.body) if step.body is not None else "nil"
        lines.append(
            f"  {{method = {_lua(step.method)}, path = {_lua(step.path)}, headers = {{{headers}}}, "
            f"body = {body}, expect = {step.expect}}},"
        )
    lines.append("}")
    lines.append(f"local nonce = {_lua(nonce)}")
    lines.append(
        """
local threads = {}
local next_thread = 0
tid = 0
ops = 0
failures = 0
local counter = 0
local step = 1
local last_id = ""

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

function request()
  local s = steps[step]
  local path = s.path:gsub("{id}", last_id)
  local body = s.body
  if body then
    counter = counter + 1
    body = body:gsub("{unique}", nonce .. "-" .. tid .. "-" .. counter)
  end
  return wrk.format(s.method, path, s.headers, body)
end

function response(status, headers, body)
  local s = steps[step]
  if status ~= s.expect then
    failures = failures + 1
    step = 1
    return
  end
  if step < #steps then
    last_id = body:match('"id":"([%x%-]+)"') or ""
    step = step + 1
  else
    ops = ops + 1
    step = 1
  end
end

function done(summary, latency, requests)
  local total_ops, total_failures = 0, 0
  for _, t in ipairs(threads) do
    total_ops = total_ops + t:get("ops")
    total_failures = total_failures + t:get("failures")
  end
  io.write(string.format("BENCH ops=%d failures=%d\\n", total_ops, total_failures))
end
"""
    )
    return "\n".join(lines)


def run(
    base_url: str,
    steps: list[Step],
    *,
    duration: float,
    connections: int,
    threads: int,
    script_dir: Path,
    nonce: str,
    script: str | None = None,
) -> WrkResult:
    """One wrk run of `duration` seconds against `base_url` (127.0.0.1 only): plain headers for a single
    GET, else `script` or the cycle script generated from `steps`."""
    if not base_url.startswith("http://127.0.0.1:"):
        raise ValueError("the benchmark only drives servers on 127.0.0.1")
    wrk = wrk_path()
    if wrk is None:
        raise SystemExit(INSTALL_HINT)
    seconds = max(round(duration), 1)
    command = [wrk, "--latency", f"-d{seconds}s", f"--timeout={max(seconds, 5)}s"]
    first = steps[0]
    if script is None and len(steps) == 1 and first.method == "GET" and first.body is None:
        command += [f"-t{threads}", f"-c{connections}"]
        for key, value in first.headers.items():
            command += ["-H", f"{key}: {value}"]
        command.append(base_url + first.path)
    else:
        path = script_dir / f"script-{nonce}.lua"
        path.write_text(script if script is not None else cycle_script(steps, nonce), encoding="utf-8")
        command += [f"-t{connections}", f"-c{connections}", "-s", str(path), base_url]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse(completed.stdout)
