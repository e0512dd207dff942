#!/usr/bin/env python3
"""shmcast deployment: start, stop and inspect a pipeline described in TOML.

    scripts/deploy.sh start  [--dry-run] [--run-dir DIR] CONFIG.toml
    scripts/deploy.sh stop   [--run-dir DIR] [--timeout SECS] CONFIG.toml
    scripts/deploy.sh status [--json] [--run-dir DIR] CONFIG.toml

`start` launches a small supervisor (a daemon, one per stream) that starts the
producer, the detector, the RTSP bridge, the recorder, the web page (`[web]`:
`shmcast-web --config CONFIG.toml`, which reads from the same file where the
detector writes its events and snapshots) and any `[[pipeline]]`
(a `gst-launch-1.0` line, typically `shmcastsrc` feeding SRT, an RTSP server,
HLS or rolling MP4 files) as the config says, each pinned to
its CPUs / NUMA node with numactl (or taskset where numactl or NUMA is
absent), restarts a process that fails with exponential backoff, and keeps
logs, pid files and a state file in the run directory. `stop` asks the
supervisor to end everything (SIGTERM, then SIGKILL after a timeout) and
removes a segment a killed producer left behind. `--dry-run` prints the exact
commands and starts nothing. See deploy/example.toml and docs/ops.md.

Environment: SHMCAST_BIN_DIR (where the binaries are), SHMCAST_RUN_DIR (base
of run directories), SHMCAST_DEPLOY_NO_NUMACTL=1 (act as if numactl were
absent: taskset placement), SHMCAST_SHM_DIR (segment directory, passed on).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("deploy: error: Python 3.11 or newer is needed (for tomllib); found " + sys.version.split()[0])

PROG = "deploy"
ROLES = ("producer", "detect", "rtsp", "record", "web")
BINARIES = {
    "producer": "shmcast-producer",
    "detect": "shmcast-detect",
    "rtsp": "shmcast-rtsp",
    "record": "shmcast-record",
    "web": "shmcast-web",
}
# Consumers stop first so they do not log a vanished producer on the way out.
STOP_ORDER = ("web", "record", "rtsp", "detect", "producer")
# A [[pipeline]] process is role "pipeline-<name>", run by gst-launch-1.0.
PIPELINE = "pipeline-"
GST_LAUNCH = "gst-launch-1.0"
PLUGIN = "libgstshmcast.so"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CPUS_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
REPO = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    pass


# ---------------------------------------------------------------- config


def _get(table: dict, key: str, kind, default=None, where: str = ""):
    if key not in table:
        return default
    v = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python: do not accept true for a number.
    if isinstance(v, bool) and bool not in kinds:
        raise ConfigError(f"{where}{key}: expected {kinds[0].__name__}, found {v!r}")
    if not isinstance(v, kinds):
        raise ConfigError(f"{where}{key}: expected {kinds[0].__name__}, found {v!r}")
    return v


def load_config(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"cannot read config {path}: not found")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}")
    known = {"stream", "run", "pipeline", *ROLES}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown section(s) [{', '.join(sorted(unknown))}] (expected {', '.join(sorted(known))})")
    s = raw.get("stream")
    if not isinstance(s, dict):
        raise ConfigError("missing [stream] section")
    name = _get(s, "name", str, where="stream.")
    if name is None or not NAME_RE.match(name):
        raise ConfigError(f"stream.name must match [A-Za-z0-9_.-]{{1,64}}, found {name!r}")
    stream = {
        "name": name,
        "width": _get(s, "width", int, 1280, "stream."),
        "height": _get(s, "height", int, 720, "stream."),
        "format": _get(s, "format", str, "rgb24", "stream."),
        "fps": _get(s, "fps", int, 30, "stream."),
        "slots": _get(s, "slots", int, 8, "stream."),
        "hugepages": _get(s, "hugepages", bool, False, "stream."),
        "mlock": _get(s, "mlock", bool, False, "stream."),
        "mode": _get(s, "mode", str, None, "stream."),
        "group": _get(s, "group", str, None, "stream."),
    }
    r = raw.get("run", {})
    run = {
        "dir": _get(r, "dir", str, None, "run."),
        "bin_dir": _get(r, "bin_dir", str, None, "run."),
        "backoff_min": float(_get(r, "backoff_min", (int, float), 1.0, "run.")),
        "backoff_max": float(_get(r, "backoff_max", (int, float), 30.0, "run.")),
        "backoff_reset": float(_get(r, "backoff_reset", (int, float), 60.0, "run.")),
        "stop_timeout": float(_get(r, "stop_timeout", (int, float), 10.0, "run.")),
        "log_level": _get(r, "log_level", str, "info", "run."),
    }
    if not 0 < run["backoff_min"] <= run["backoff_max"]:
        raise ConfigError("run.backoff_min must be > 0 and <= run.backoff_max")
    procs = {}
    tables = [(role, f"{role}.", raw.get(role)) for role in ROLES]
    pipelines = raw.get("pipeline", [])
    if not isinstance(pipelines, list):
        raise ConfigError("pipelines are [[pipeline]] tables (an array), not a [pipeline] table")
    for i, t in enumerate(pipelines):
        if not isinstance(t, dict):
            raise ConfigError(f"[[pipeline]] #{i + 1} must be a table")
        pname = _get(t, "name", str, None, f"pipeline[{i}].")
        if pname is None or not NAME_RE.match(pname):
            raise ConfigError(f"pipeline[{i}].name must match [A-Za-z0-9_.-]{{1,64}}, found {pname!r}")
        if PIPELINE + pname in {r for r, _, _ in tables}:
            raise ConfigError(f"two [[pipeline]] sections are named {pname!r}")
        tables.append((PIPELINE + pname, f"pipeline.{pname}.", t))
    for role, w, t in tables:
        if t is None:
            continue
        if not isinstance(t, dict):
            raise ConfigError(f"[{role}] must be a table")
        if not _get(t, "enabled", bool, True, w):
            continue
        args = _get(t, "args", list, [], w)
        if not all(isinstance(a, str) for a in args):
            raise ConfigError(f"{w}args must be a list of strings")
        env = _get(t, "env", dict, {}, w)
        if not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(f"{w}env values must be strings")
        node = _get(t, "numa_node", int, None, w)
        if node is not None and node < 0:
            raise ConfigError(f"{w}numa_node must be >= 0")
        cpus = _get(t, "cpus", (str, int), None, w)
        if cpus is not None:
            cpus = str(cpus).replace(" ", "")
            if not CPUS_RE.match(cpus):
                raise ConfigError(f"{w}cpus must be a CPU list such as \"0-3,8\", found {cpus!r}")
        restart = _get(t, "restart", str, "on-failure", w)
        if restart not in ("on-failure", "always", "no"):
            raise ConfigError(f"{w}restart must be on-failure, always or no, found {restart!r}")
        p = {
            "role": role,
            "args": args,
            "env": env,
            "numa_node": node,
            "cpus": cpus,
            "restart": restart,
            "metrics": _get(t, "metrics", str, None, w),
        }
        if role == "producer":
            p["source"] = _get(t, "source", str, "testsrc", w)
        if role == "rtsp":
            p["listen"] = _get(t, "listen", str, "127.0.0.1:8554", w)
            p["mount"] = _get(t, "mount", str, f"/{name}", w)
        if role == "web":
            p["listen"] = _get(t, "listen", str, "127.0.0.1:8080", w)
        if role == "record":
            p["dir"] = _get(t, "dir", str, None, w)
            if not p["dir"]:
                raise ConfigError("record.dir is required (the recording directory)")
        if role.startswith(PIPELINE):
            launch = _get(t, "launch", str, None, w)
            if not launch or not launch.strip():
                raise ConfigError(f"{w}launch must be a gst-launch-1.0 pipeline description")
            try:
                # {stream} stands for the stream name.
                p["launch"] = shlex.split(launch.replace("{stream}", name))
            except ValueError as e:
                raise ConfigError(f"{w}launch cannot be split into arguments: {e}")
        procs[role] = p
    if not procs:
        raise ConfigError(
            "no process to run: add a [producer], [detect], [rtsp], [record], [web] or [[pipeline]] section")
    return {"stream": stream, "run": run, "procs": procs, "path": str(path)}


# ---------------------------------------------------------------- placement


def numa_nodes() -> dict[int, str]:
    """NUMA node -> its CPU list, from sysfs (empty when the kernel has no NUMA)."""
    out = {}
    base = Path("/sys/devices/system/node")
    for d in sorted(base.glob("node[0-9]*")):
        try:
            out[int(d.name[4:])] = (d / "cpulist").read_text().strip()
        except (OSError, ValueError):
            pass
    return out


def have_numactl() -> bool:
    if os.environ.get("SHMCAST_DEPLOY_NO_NUMACTL") == "1":
        return False
    return shutil.which("numactl") is not None and bool(numa_nodes())


def placement(p: dict, warn) -> list[str]:
    """The command prefix that pins a process.

    With numactl: `--membind=N` keeps the process's memory on node N. For the
    producer this is where the ring lives, because the producer creates and
    pre-faults the segment: first touch under the bind policy places every
    page on N, and readers on other nodes then read it remotely. CPUs come from
    `--physcpubind` when listed, else `--cpunodebind=N`.
    Without numactl (or without NUMA): `taskset -c` with the listed CPUs, or
    the node's CPUs from sysfs; memory placement is then the kernel's default
    (first touch on the CPU that touches it, which pinning makes local anyway).
    """
    node, cpus = p["numa_node"], p["cpus"]
    if node is None and cpus is None:
        return []
    nodes = numa_nodes()
    if node is not None and nodes and node not in nodes:
        warn(f"{p['role']}: NUMA node {node} does not exist here (nodes: {sorted(nodes)})")
    if have_numactl():
        cmd = ["numactl"]
        if cpus is not None:
            cmd.append(f"--physcpubind={cpus}")
        elif node is not None:
            cmd.append(f"--cpunodebind={node}")
        if node is not None:
            cmd.append(f"--membind={node}")
        return cmd + ["--"]
    if cpus is None:
        cpus = nodes.get(node)
        if cpus is None:
            warn(f"{p['role']}: cannot pin to NUMA node {node} without numactl or NUMA; running unpinned")
            return []
    if shutil.which("taskset") is None:
        warn(f"{p['role']}: neither numactl nor taskset found; running unpinned")
        return []
    if node is not None:
        warn(f"{p['role']}: numactl or NUMA absent: pinning CPUs {cpus} with taskset, memory not bound")
    return ["taskset", "-c", cpus]


def exe_name(role: str) -> str:
    return GST_LAUNCH if role.startswith(PIPELINE) else BINARIES[role]


def bin_dir(cfg: dict) -> Path | None:
    d = os.environ.get("SHMCAST_BIN_DIR") or cfg["run"]["bin_dir"]
    if not d:
        local = REPO / "target" / "release"
        return local if local.is_dir() else None
    d = Path(d)
    return d if d.is_absolute() else Path(cfg["path"]).resolve().parent / d


def plugin_dir(cfg: dict) -> str | None:
    """The directory of this checkout's (or run.bin_dir's) libgstshmcast.so, if built."""
    d = bin_dir(cfg)
    return str(d) if d is not None and (d / PLUGIN).is_file() else None


def binary(cfg: dict, role: str) -> str:
    if role.startswith(PIPELINE):
        return shutil.which(GST_LAUNCH) or GST_LAUNCH
    name = BINARIES[role]
    bin_dir = os.environ.get("SHMCAST_BIN_DIR") or cfg["run"]["bin_dir"]
    if bin_dir:
        d = Path(bin_dir)
        if not d.is_absolute():
            d = Path(cfg["path"]).resolve().parent / d
        return str(d / name)
    # A checkout that has been built: its binaries, even one not built yet
    # (start then says which is missing), so a half-built tree never mixes
    # with older installed binaries.
    local = REPO / "target" / "release"
    if local.is_dir():
        return str(local / name)
    return shutil.which(name) or name


def command(cfg: dict, role: str, warn) -> list[str]:
    s, p = cfg["stream"], cfg["procs"][role]
    if role.startswith(PIPELINE):
        # -e: SIGINT sends EOS first, so recordings are finalised.
        return placement(p, warn) + [binary(cfg, role), "-e"] + p["launch"]
    if role == "web":
        # Not tied to one stream: it shows every stream of the host, and takes
        # the detector's --events/--snapshots from this very config file.
        cmd = [binary(cfg, role), "--listen", p["listen"], "--config", str(Path(cfg["path"]).resolve())]
        cmd += ["--log-level", cfg["run"]["log_level"]]
        if p["metrics"]:
            cmd += ["--metrics", p["metrics"]]
        return placement(p, warn) + cmd + p["args"]
    cmd = [binary(cfg, role), "--name", s["name"], "--log-level", cfg["run"]["log_level"]]
    if role == "producer":
        cmd += ["--source", p["source"], "--width", str(s["width"]), "--height", str(s["height"])]
        cmd += ["--format", s["format"], "--fps", str(s["fps"]), "--slots", str(s["slots"])]
        if s["hugepages"]:
            cmd.append("--hugepages")
        if s["mlock"]:
            cmd.append("--mlock")
        if s["mode"]:
            cmd += ["--mode", s["mode"]]
        if s["group"]:
            cmd += ["--group", s["group"]]
    elif role == "rtsp":
        cmd += ["--listen", p["listen"], "--mount", p["mount"]]
    elif role == "record":
        cmd += ["--dir", p["dir"]]
    if p["metrics"]:
        cmd += ["--metrics", p["metrics"]]
    return placement(p, warn) + cmd + p["args"]


def environment(cfg: dict, role: str) -> dict[str, str]:
    """Variables set for a process on top of the supervisor's: a pipeline
    finds the shmcast plugin of this checkout through GST_PLUGIN_PATH."""
    env = {}
    plugins = plugin_dir(cfg)
    if role.startswith(PIPELINE) and plugins:
        old = os.environ.get("GST_PLUGIN_PATH")
        env["GST_PLUGIN_PATH"] = plugins + (f":{old}" if old else "")
    env.update(cfg["procs"][role]["env"])
    return env


def run_dir(cfg: dict, override: str | None) -> Path:
    name = cfg["stream"]["name"]
    if override:
        return Path(override)
    if cfg["run"]["dir"]:
        return Path(cfg["run"]["dir"])
    base = os.environ.get("SHMCAST_RUN_DIR")
    if base:
        return Path(base) / name
    if os.geteuid() == 0 or os.access("/run/shmcast", os.W_OK):
        return Path("/run/shmcast") / name
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.access(xdg, os.W_OK):
        return Path(xdg) / "shmcast" / name
    return Path(f"/tmp/shmcast-{os.getuid()}") / name


def segment_path(name: str) -> Path:
    return Path(os.environ.get("SHMCAST_SHM_DIR", "/dev/shm")) / f"shmcast.{name}"


# ---------------------------------------------------------------- processes


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
        return st.rsplit(") ", 1)[1][:1] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def pid_runs(pid: int, needle: str) -> bool:
    """Whether `pid` is alive and its command line mentions `needle` (guards
    against signalling a recycled pid)."""
    if not pid_alive(pid):
        return False
    try:
        return needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def producer_running(name: str) -> int | None:
    """The pid of a live `shmcast-producer --name NAME`, if any (scans /proc)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(a.endswith(b"shmcast-producer") for a in argv):
            continue
        for i, a in enumerate(argv):
            if (a == b"--name" and i + 1 < len(argv) and argv[i + 1] == name.encode()) or a == f"--name={name}".encode():
                if pid_alive(int(d.name)):
                    return int(d.name)
    return None


def remove_stale_segment(name: str, say) -> None:
    """Removes the segment a killed producer left behind, unless a producer
    of that name runs (then it is live, or that producer replaces it)."""
    seg = segment_path(name)
    if seg.exists() and producer_running(name) is None:
        seg.unlink(missing_ok=True)
        say(f"removed stale segment {seg}")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}", flush=True)


class Supervisor:
    """Runs in the daemon: starts every process, restarts failures with
    exponential backoff, writes pid files and state.json, stops on SIGTERM."""

    def __init__(self, cfg: dict, rdir: Path):
        self.cfg, self.rdir = cfg, rdir
        self.stopping = False
        self.procs: dict[str, dict] = {}
        for role in cfg["procs"]:
            self.procs[role] = {
                "popen": None,
                "pid": None,
                "started": None,
                "restarts": 0,
                "last_exit": None,
                "next_start": 0.0,
                "backoff": cfg["run"]["backoff_min"],
                "done": False,
                "cmd": command(cfg, role, lambda m: log(f"warning: {m}")),
            }

    def on_signal(self, signum, _frame):
        self.stopping = True

    def start(self, role: str) -> None:
        st = self.procs[role]
        p = self.cfg["procs"][role]
        logf = open(self.rdir / f"{role}.log", "ab")
        env = dict(os.environ)
        # Plain log files: tracing writes colour codes unless told not to.
        env.setdefault("NO_COLOR", "1")
        env.update(environment(self.cfg, role))
        try:
            child = subprocess.Popen(
                st["cmd"], stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        except OSError as e:
            log(f"{role}: cannot start {st['cmd'][0]}: {e}")
            st["last_exit"] = f"cannot start: {e}"
            self.schedule(role, failed=True, ran=0.0)
            return
        finally:
            logf.close()
        st.update(popen=child, pid=child.pid, started=time.time())
        write_atomic(self.rdir / f"{role}.pid", f"{child.pid}\n")
        log(f"{role}: started pid {child.pid}: {shlex.join(st['cmd'])}")

    def schedule(self, role: str, failed: bool, ran: float) -> None:
        st = self.procs[role]
        policy = self.cfg["procs"][role]["restart"]
        if policy == "no" or (policy == "on-failure" and not failed):
            st["done"] = True
            return
        run = self.cfg["run"]
        # A process that ran a good while before failing starts again at the
        # minimum delay: backoff is for crash loops, not for rare crashes.
        if ran >= run["backoff_reset"]:
            st["backoff"] = run["backoff_min"]
        delay = st["backoff"]
        st["backoff"] = min(st["backoff"] * 2, run["backoff_max"])
        st["next_start"] = time.monotonic() + delay
        st["restarts"] += 1
        log(f"{role}: restarting in {delay:.1f} s (restart {st['restarts']})")

    def reap(self) -> None:
        for role, st in self.procs.items():
            child = st["popen"]
            if child is None:
                continue
            rc = child.poll()
            if rc is None:
                continue
            ran = time.time() - (st["started"] or time.time())
            how = f"exit {rc}" if rc >= 0 else f"signal {signal.Signals(-rc).name}"
            st.update(popen=None, last_exit=how)
            (self.rdir / f"{role}.pid").unlink(missing_ok=True)
            log(f"{role}: pid {st['pid']} ended ({how}) after {ran:.1f} s")
            st["pid"] = None
            if not self.stopping:
                self.schedule(role, failed=rc != 0, ran=ran)

    def write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "stream": self.cfg["stream"]["name"],
            "config": self.cfg["path"],
            "processes": {
                role: {
                    "pid": st["pid"],
                    "started": st["started"],
                    "restarts": st["restarts"],
                    "last_exit": st["last_exit"],
                    "cmd": st["cmd"],
                    "done": st["done"],
                }
                for role, st in self.procs.items()
            },
        }
        write_atomic(self.rdir / "state.json", json.dumps(state, indent=1) + "\n")

    def stop_all(self) -> None:
        timeout = self.cfg["run"]["stop_timeout"]
        for role in stop_order(self.cfg):
            st = self.procs.get(role)
            if not st or st["popen"] is None:
                continue
            child = st["popen"]
            log(f"{role}: stopping pid {child.pid} (SIGTERM)")
            try:
                child.send_signal(signal.SIGTERM)
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{role}: pid {child.pid} still running after {timeout:.0f} s: SIGKILL")
                child.kill()
                child.wait()
            except ProcessLookupError:
                pass
        self.reap()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        write_atomic(self.rdir / "supervisor.pid", f"{os.getpid()}\n")
        log(f"supervisor {os.getpid()} for stream {self.cfg['stream']['name']} from {self.cfg['path']}")
        try:
            while not self.stopping:
                now = time.monotonic()
                for role, st in self.procs.items():
                    if st["popen"] is None and not st["done"] and now >= st["next_start"]:
                        self.start(role)
                self.write_state()
                if all(st["done"] for st in self.procs.values()):
                    log("every process ended and none is to be restarted")
                    break
                time.sleep(0.1)
                self.reap()
            self.stop_all()
            for st in self.procs.values():
                st["done"] = True
            self.write_state()
        finally:
            # A producer that was SIGKILLed (here or by someone else) leaves its
            # segment behind; ours are all stopped now.
            if "producer" in self.procs:
                remove_stale_segment(self.cfg["stream"]["name"], log)
            (self.rdir / "supervisor.pid").unlink(missing_ok=True)
            log("supervisor stopped")
        return 0


# ---------------------------------------------------------------- commands


def stop_order(cfg: dict) -> list[str]:
    """Pipelines first (they read the ring), then the consumers, the producer last."""
    pipes = [r for r in cfg["procs"] if r.startswith(PIPELINE)]
    return pipes + [r for r in STOP_ORDER if r in cfg["procs"]]


def cmd_start(cfg: dict, rdir: Path, dry_run: bool) -> int:
    warnings: list[str] = []
    cmds = {role: command(cfg, role, warnings.append) for role in cfg["procs"]}
    if dry_run:
        print(f"# shmcast stream {cfg['stream']['name']} from {cfg['path']}")
        print(f"# run dir {rdir}; logs {rdir}/<process>.log; pid files {rdir}/<process>.pid")
        for w in dict.fromkeys(warnings):
            print(f"# warning: {w}")
        for role, cmd in cmds.items():
            p = cfg["procs"][role]
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in environment(cfg, role).items())
            print(f"# {role}: restart={p['restart']}")
            print((f"env {env} " if env else "") + shlex.join(cmd))
        return 0
    for w in dict.fromkeys(warnings):
        print(f"{PROG}: warning: {w}", file=sys.stderr)
    missing = [exe for exe in (binary(cfg, r) for r in cmds) if not os.access(exe, os.X_OK)]
    if any(r.startswith(PIPELINE) for r in cmds) and not plugin_dir(cfg):
        print(f"{PROG}: note: {PLUGIN} is not built in {bin_dir(cfg)}; pipelines use the installed shmcast plugin "
              f"(build with `cargo build --release -p gst-plugin-shmcast`)", file=sys.stderr)
    if missing:
        print(f"{PROG}: error: binary not found or not executable: {', '.join(missing)} "
              f"(build with `cargo build --release --workspace`, or set SHMCAST_BIN_DIR / run.bin_dir)",
              file=sys.stderr)
        return 1
    rdir.mkdir(parents=True, exist_ok=True)
    spid = read_pid(rdir / "supervisor.pid")
    if spid and pid_runs(spid, "deploy"):
        print(f"{PROG}: error: stream {cfg['stream']['name']} is already running (supervisor pid {spid}, "
              f"run dir {rdir}); stop it first", file=sys.stderr)
        return 1
    seg = segment_path(cfg["stream"]["name"])
    if "producer" in cfg["procs"] and seg.exists():
        print(f"{PROG}: note: {seg} exists; the producer replaces it if it is stale, refuses if it is live",
              file=sys.stderr)
    (rdir / "state.json").unlink(missing_ok=True)
    # Double fork: the supervisor is a daemon in its own session, re-parented
    # to init, so the terminal or test that ran `start` may go away.
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        try:
            out = os.open(rdir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            os._exit(Supervisor(cfg, rdir).run())
        except BaseException as e:  # the daemon must never return into the caller's code
            try:
                log(f"supervisor failed: {e!r}")
            finally:
                os._exit(1)
    os.waitpid(pid, 0)
    # Wait (bounded) until every process has been started once.
    deadline = time.monotonic() + 10
    state = None
    while time.monotonic() < deadline:
        state = read_state(rdir)
        if state and all(v["pid"] or v["last_exit"] for v in state["processes"].values()):
            break
        time.sleep(0.1)
    else:
        print(f"{PROG}: error: the supervisor did not start its processes within 10 s; see {rdir}/supervisor.log",
              file=sys.stderr)
        return 1
    print(f"started stream {cfg['stream']['name']} (supervisor pid {state['supervisor_pid']}, run dir {rdir})")
    for role, v in state["processes"].items():
        print(f"  {role:<9} pid {v['pid'] or '-':<8} log {rdir}/{role}.log")
    return 0


def read_state(rdir: Path) -> dict | None:
    try:
        return json.loads((rdir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def cmd_stop(cfg: dict, rdir: Path, timeout: float | None) -> int:
    name = cfg["stream"]["name"]
    timeout = cfg["run"]["stop_timeout"] if timeout is None else timeout
    spid = read_pid(rdir / "supervisor.pid")
    stopped_any = False
    if spid and pid_runs(spid, "deploy"):
        os.kill(spid, signal.SIGTERM)
        stopped_any = True
        # The supervisor gives each process `timeout` seconds before SIGKILL.
        deadline = time.monotonic() + timeout * len(cfg["procs"]) + 5
        while pid_alive(spid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(spid):
            print(f"{PROG}: warning: supervisor {spid} did not stop; killing it and its processes", file=sys.stderr)
            os.kill(spid, signal.SIGKILL)
    # Whatever is left (a supervisor killed with SIGKILL leaves its children):
    # signal the processes named in the pid files, if they still are ours.
    leftovers = []
    for role in stop_order(cfg):
        pid = read_pid(rdir / f"{role}.pid")
        if pid and pid_runs(pid, exe_name(role)):
            os.kill(pid, signal.SIGTERM)
            leftovers.append((role, pid))
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for _, p in leftovers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for role, pid in leftovers:
        stopped_any = True
        if pid_alive(pid):
            print(f"{PROG}: {role} pid {pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)
    for role in cfg["procs"]:
        (rdir / f"{role}.pid").unlink(missing_ok=True)
    if "producer" in cfg["procs"]:
        remove_stale_segment(name, print)
    print(f"stopped stream {name}" if stopped_any else f"stream {name} was not running")
    return 0


def fmt_duration(s: float) -> str:
    s = int(s)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


def cmd_status(cfg: dict, rdir: Path, as_json: bool) -> int:
    name = cfg["stream"]["name"]
    state = read_state(rdir) or {"processes": {}}
    spid = read_pid(rdir / "supervisor.pid")
    sup_alive = bool(spid and pid_runs(spid, "deploy"))
    now = time.time()
    rows = {}
    for role in cfg["procs"]:
        v = state["processes"].get(role, {})
        pid = v.get("pid")
        alive = bool(pid and pid_alive(pid))
        rows[role] = {
            "pid": pid if alive else None,
            "running": alive,
            "uptime_s": round(now - v["started"], 1) if alive and v.get("started") else None,
            "restarts": v.get("restarts", 0),
            "last_exit": v.get("last_exit"),
            "cpus_allowed": cpus_allowed(pid) if alive else None,
        }
    inspect = None
    exe = str(Path(binary(cfg, "producer")).with_name("shmcast-inspect"))
    if not os.access(exe, os.X_OK):
        exe = shutil.which("shmcast-inspect") or ""
    if exe:
        try:
            out = subprocess.run([exe, "--name", name, "--json"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                inspect = json.loads(out.stdout)
            else:
                inspect = {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            inspect = {"error": str(e)}
    result = {
        "stream": name,
        "run_dir": str(rdir),
        "supervisor_pid": spid if sup_alive else None,
        "processes": rows,
        "segment": inspect,
    }
    if as_json:
        print(json.dumps(result))
    else:
        print(f"stream {name}: supervisor " + (f"pid {spid}" if sup_alive else "not running") + f", run dir {rdir}")
        print(f"  {'process':<9} {'pid':>8} {'uptime':>8} {'restarts':>8}  {'cpus':<8} last exit")
        for role, r in rows.items():
            up = fmt_duration(r["uptime_s"]) if r["uptime_s"] is not None else "-"
            print(f"  {role:<9} {r['pid'] or '-':>8} {up:>8} {r['restarts']:>8}  {r['cpus_allowed'] or '-':<8} "
                  f"{r['last_exit'] or '-'}")
        if inspect is not None and "error" in inspect:
            print(f"  segment: {inspect['error']}")
        elif inspect is not None:
            i = inspect
            print(f"  segment: {i.get('state')}, producer pid {i.get('pid')}, {i.get('width')}x{i.get('height')} "
                  f"{i.get('format')}, {i.get('fps')} fps, {i.get('slots')} slots, head {i.get('head')}, "
                  f"heartbeat {i.get('heartbeat_age_ms')} ms ago ({i.get('path', '')})")
    return 0 if sup_alive else 3


def cpus_allowed(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="deploy.sh",
        description="Start, stop or show a shmcast pipeline described in a TOML config.",
        epilog="examples:\n  scripts/deploy.sh start --dry-run deploy/example.toml\n"
        "  scripts/deploy.sh start deploy/example.toml\n  scripts/deploy.sh status deploy/example.toml\n"
        "  scripts/deploy.sh stop deploy/example.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("action", choices=["start", "stop", "status"])
    ap.add_argument("config", type=Path, help="the pipeline's TOML file (see deploy/example.toml)")
    ap.add_argument("--dry-run", action="store_true", help="start: print the exact commands, start nothing")
    ap.add_argument("--run-dir", help="directory for logs, pid files and state (default /run/shmcast/NAME)")
    ap.add_argument("--timeout", type=float, help="stop: seconds to wait after SIGTERM before SIGKILL")
    ap.add_argument("--json", action="store_true", help="status: one JSON object")
    a = ap.parse_args(argv)
    try:
        cfg = load_config(a.config)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    rdir = run_dir(cfg, a.run_dir)
    if a.action == "start":
        return cmd_start(cfg, rdir, a.dry_run)
    if a.action == "stop":
        return cmd_stop(cfg, rdir, a.timeout)
    return cmd_status(cfg, rdir, a.json)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
