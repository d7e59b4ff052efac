"""Running a pipeline's processes, shared by ``flop-demo`` and the benchmarks.

:func:`run_process` runs one command to completion: its output teed to a log, the lines a
``show`` callback selects printed, its wall time and its own peak resident memory measured
(``os.wait4``). :class:`Runner` runs a graph of cached, resumable :class:`Step` s with it: a
step is a list of commands run one after the other in ``ROOT/STEP/``; when they succeed,
``.done`` receives the step's key (:func:`step_key`: a hash of its commands, of its
dependencies' keys, of the code snapshot and of the files it names), so a rerun skips the
step while nothing it depends on changed, and reruns it otherwise. Up to ``jobs`` steps run
at once; an ``exclusive`` step (a timing) runs with nothing else of the runner's running.
"""

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence


def tool(name: str) -> str:
    """A console script of this interpreter's environment (fairseq-train, flop-compact, ...), else
    the bare name (found on PATH)."""
    path = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), name)
    return path if os.path.exists(path) else name


def run_process(argv: Sequence, log=None, env=None, cwd=None, stdout=None,
                show: Optional[Callable[[str], Optional[str]]] = None, started=None) -> dict:
    """Runs ``argv`` to completion; returns ``{rc, output, wall_s, peak_rss_mib}``.

    Its output (stdout and stderr; only stderr when ``stdout``, an open file, takes stdout) is
    written to the open file ``log`` and returned as ``output``; ``show(line)`` gives the text to
    print for a line, or None. ``started(proc)`` receives the process (so a caller can stop it).
    The peak is the child's own maximum resident set, not this process's."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, text=True,
                            errors="replace", stdout=stdout or subprocess.PIPE,
                            stderr=subprocess.PIPE if stdout else subprocess.STDOUT)
    if started is not None:
        started(proc)
    pipe, lines = proc.stderr if stdout else proc.stdout, []
    for line in pipe:
        lines.append(line)
        if log is not None:
            log.write(line)
        shown = show(line) if show else None
        if shown:
            print("   " + shown, flush=True)
    pipe.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "output": "".join(lines), "wall_s": time.perf_counter() - t0,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


@dataclass
class Cmd:
    argv: List[str]
    stdout: Optional[str] = None  # file (in the step dir) that receives stdout

    def shown(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv) + (f" > {self.stdout}" if self.stdout else "")


@dataclass
class Step:
    name: str
    cmds: List[Cmd]
    outputs: List[str]  # relative to the step dir; must exist afterwards
    deps: List[str] = field(default_factory=list)
    exclusive: bool = False  # run with nothing else of ours running
    code: bool = True  # runs the snapshot's code: the code snapshot's hash is part of its key
    files: List[str] = field(default_factory=list)  # files it runs outside the hash: their hashes count
    post: Optional[Callable[["Step", str], None]] = None  # (step, step_dir) -> writes result files
    key: str = ""
    est_s: float = 0.0  # estimated seconds on a quiet machine; not part of the key


def step_key(cmds: Sequence[Cmd], dep_keys: Sequence[str], code_hash: Optional[str],
             file_hashes: Sequence[str]) -> str:
    """The cache key: changes with any command (argv or stdout file), any dependency's key,
    the code snapshot's hash (``None``: a step that runs no snapshot code) or a named file's hash."""
    payload = json.dumps([[c.argv, c.stdout] for c in cmds] + list(dep_keys)
                         + ([code_hash] if code_hash is not None else []) + list(file_hashes))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tree_hash(root: str, skip: Sequence[str] = ()) -> str:
    """Hash of the ``.py`` files under ``root`` (names and contents), leaving out ``skip`` folders."""
    h = hashlib.sha256()
    files = []
    for dirpath, dirnames, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel, d)) not in skip]
        files += [os.path.join(dirpath, n) for n in names if n.endswith(".py")]
    for path in sorted(files):
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


class Runner:
    """The steps of one graph under ``root``, each command run in its step's directory (so that
    ``python -m`` finds the code snapshot on ``PYTHONPATH``, not the working tree) with
    ``threads`` torch threads; ``Step.files`` and the snapshot's folders are relative to ``repo``."""

    def __init__(self, root: str, jobs: int, threads: int, repo: str = "."):
        self.root = root
        self.repo = os.path.abspath(repo)
        self.jobs = max(1, jobs)
        self.threads = threads
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                        PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
        self.steps: Dict[str, Step] = {}
        self.order: List[str] = []
        self.code_hash = ""
        self.code_dir = None
        self._last_load = 0.0
        self.wall: Dict[str, float] = {}
        self.span: Dict[str, tuple] = {}  # step -> (start, end) epoch seconds

    def elapsed(self) -> float:
        """From the first step's start to the last step's end (over cached runs too)."""
        if not self.span:
            return 0.0
        return max(e for _, e in self.span.values()) - min(s for s, _ in self.span.values())

    def add(self, step: Step) -> Step:
        if step.name in self.steps:
            raise ValueError(f"step {step.name} defined twice")
        for d in step.deps:
            if d not in self.steps:
                raise ValueError(f"{step.name}: unknown dependency {d}")
        step.key = step_key(step.cmds, [self.steps[d].key for d in step.deps],
                            self.code_hash if step.code else None,
                            [file_hash(os.path.join(self.repo, f)) for f in step.files])
        self.steps[step.name] = step
        self.order.append(step.name)
        return step

    def snapshot_code(self, dirs: Sequence[str], unhashed: Sequence[str] = ()) -> None:
        """Copies ``dirs`` (of ``repo``) into ROOT/code and puts it first on every child's
        PYTHONPATH, so that edits to the working tree during a run do not reach later steps;
        the snapshot's hash (leaving out ``unhashed`` folders, whose files the steps name) is
        part of the key of every step that runs its code, so changed code reruns those steps."""
        code = os.path.join(self.root, "code")
        tmp = code + ".tmp"
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.json", "*.jsonl", "*.tsv", "*.md")
        for name in dirs:
            shutil.copytree(os.path.join(self.repo, name), os.path.join(tmp, name), ignore=ignore)
        code_hash = tree_hash(tmp, unhashed)
        if os.path.exists(code):
            shutil.rmtree(code)
        os.replace(tmp, code)
        self.code_dir = code
        self.code_hash = code_hash
        self.env["PYTHONPATH"] = os.pathsep.join([code] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        with open(os.path.join(self.root, "code_hash.txt"), "w") as f:
            f.write(self.code_hash + "\n")
        with open(os.path.join(self.root, "run.json"), "w") as f:  # what the report says of how it ran
            json.dump({"jobs": self.jobs, "threads": self.threads}, f)

    def load_timing(self, name: str) -> None:
        """Reads a finished step's wall time and (start, end) from its ``wall_s.txt``, if any."""
        path = os.path.join(self.dir(name), "wall_s.txt")
        if os.path.exists(path):
            vals = [float(v) for v in open(path).read().split()]
            self.wall[name] = vals[0]
            if len(vals) == 3:
                self.span[name] = (vals[1], vals[2])

    def dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def done(self, step: Step) -> bool:
        d = self.dir(step.name)
        marker = os.path.join(d, ".done")
        if not os.path.isfile(marker):
            return False
        with open(marker) as f:
            if f.read().strip() != step.key:
                return False
        return all(os.path.exists(os.path.join(d, o)) for o in step.outputs)

    def mark_done(self, step: Step) -> None:
        os.makedirs(self.dir(step.name), exist_ok=True)
        with open(os.path.join(self.dir(step.name), ".done"), "w") as f:
            f.write(step.key + "\n")

    def _run_step(self, job: dict) -> None:
        """A job's thread: the step's commands one after the other, until one fails."""
        step, d = job["step"], job["dir"]
        with open(os.path.join(d, "log.txt"), "w") as log:
            for cmd in step.cmds:
                print(f"[{time.strftime('%H:%M:%S')}] {step.name}: $ {cmd.shown()}", flush=True)
                log.write(f"$ {cmd.shown()}\n")
                log.flush()
                out = open(os.path.join(d, cmd.stdout), "w") if cmd.stdout else None
                try:
                    rc = run_process(cmd.argv, log=log, env=self.env, cwd=d, stdout=out,
                                     started=lambda p: job.update(proc=p))["rc"]
                finally:
                    if out is not None:
                        out.close()
                if rc != 0:
                    job["rc"] = rc
                    return
        job["rc"] = 0

    def _launch(self, step: Step) -> dict:
        d = self.dir(step.name)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        job = {"step": step, "dir": d, "proc": None, "rc": None, "start": time.time()}
        job["thread"] = threading.Thread(target=self._run_step, args=(job,), daemon=True)
        job["thread"].start()
        return job

    def _finish(self, job) -> None:
        step, d = job["step"], job["dir"]
        if step.post is not None:
            step.post(step, d)
        missing = [o for o in step.outputs if not os.path.exists(os.path.join(d, o))]
        if missing:
            raise SystemExit(f"runner: step {step.name} finished without its outputs {missing}")
        self.mark_done(step)
        end = time.time()
        self.wall[step.name] = end - job["start"]
        self.span[step.name] = (job["start"], end)
        with open(os.path.join(d, "wall_s.txt"), "w") as f:
            f.write(f"{self.wall[step.name]:.1f} {job['start']:.1f} {end:.1f}\n")
        print(f"[{time.strftime('%H:%M:%S')}] {step.name}: done in {self.wall[step.name]:.0f}s", flush=True)

    def _fail(self, job) -> None:
        path = os.path.join(job["dir"], "log.txt")
        with open(path, errors="replace") as f:
            sys.stderr.write("".join(f.readlines()[-40:]))
        raise SystemExit(f"runner: step {job['step'].name} failed (exit status {job['rc']}); log: {path}")

    def _record_load(self, running: int) -> None:
        """Every 30 s: the machine's 1-minute load average and how many of our processes ran."""
        if time.time() - self._last_load >= 30:
            self._last_load = time.time()
            with open(os.path.join(self.root, "loadavg.txt"), "a") as f:
                f.write(f"{time.time():.0f} {os.getloadavg()[0]:.2f} {running}\n")

    def _startable(self, pending, finished, running) -> list:
        """The steps to start now: non-exclusive ones first; an exclusive step only when nothing
        else is running or ready, and then alone."""
        ready = [n for n in pending if all(d in finished for d in self.steps[n].deps)]
        if any(j["step"].exclusive for j in running):
            return []
        start = []
        for n in ready:
            if len(running) + len(start) >= self.jobs:
                break
            if self.steps[n].exclusive:
                if running or start or any(not self.steps[m].exclusive for m in ready):
                    continue
                return [n]
            start.append(n)
        return start

    def run(self) -> None:
        pending = list(self.order)
        finished = set()
        for n in list(pending):
            if self.done(self.steps[n]):
                print(f"[cached] {n} ({self.dir(n)})", flush=True)
                pending.remove(n)
                finished.add(n)
                self.load_timing(n)
        running = []
        try:
            while pending or running:
                for n in self._startable(pending, finished, running):
                    pending.remove(n)
                    running.append(self._launch(self.steps[n]))
                if not running:
                    raise SystemExit(f"runner: steps {pending} can never run (dependencies)")
                time.sleep(0.5)
                self._record_load(len(running))
                for job in [j for j in running if not j["thread"].is_alive()]:
                    running.remove(job)
                    if job["rc"] != 0:
                        self._fail(job)
                    self._finish(job)
                    finished.add(job["step"].name)
        except BaseException:
            for job in running:
                proc = job["proc"]
                if proc is not None and proc.returncode is None:  # not Popen.terminate: it would reap
                    os.kill(proc.pid, signal.SIGTERM)  # the child before run_process's wait4
            for job in running:
                job["thread"].join(10)
            raise
