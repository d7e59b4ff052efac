"""Runs many console-script invocations in one Python process, each through the installed
console script's own entry point, and reports what a separate process would have shown.

``python tests/cli_driver.py ROWS.json RESULTS.json``. ROWS is a list of
``{"id", "tool", "args", "watch", "fresh"}``; RESULTS maps each id to ``{"rc", "stdout",
"stderr", "last", "files", "sentinel"}`` (``last``: the last non-empty stderr line; ``files``:
what ``watch`` holds afterwards). Importing fairseq costs seconds per process, and
tests/test_bad_input.py has about 45 rows (tests/test_recipes.py a few training runs), hence
one process for all of a test file's rows.

What makes a row look like its own process:

- entry points are looked up by console-script name in the installed metadata, so a row
  runs the function the ``fairseq-train`` / ``flop-compact`` executable runs;
- ``sys.exit`` / uncaught exceptions become an exit code and stderr text as the
  interpreter's own top level would make them (``SystemExit("msg")`` prints ``msg``, rc 1;
  any other exception prints its traceback, rc 1);
- stdout and stderr are captured at the file-descriptor level, so logging handlers that
  hold the original streams, warnings and C-level writes are all caught;
- the root logger gets, per row, the handlers and level a fresh process of that tool has
  when its entry point is called (see ``_entry_points``: fairseq-train logs to stdout,
  fairseq-eval-lm to stderr), and warnings are reset so each row shows its own
  once-per-place ones;
- a ``fresh`` row (fairseq failing *before* our plugin is imported) is refused once anything
  has registered the FLOP models: it must come first.

Left shared, on purpose: fairseq's registries and the imported ``--user-dir``, which fairseq
itself imports only once per process (``utils.import_user_module`` memoises the path).
"""

import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings

SENTINEL = "/tmp/flop_fairseq_test_unpickled_code_ran"


def _imports_fairseq_first(module):
    """Whether ``module`` imports fairseq before it calls ``logging.basicConfig`` (or never calls
    it): then, in a fresh process, the ``basicConfig`` calls inside fairseq's own modules are the
    ones that take effect (fairseq_cli.eval_lm), else the module's own (fairseq_cli.train)."""
    import ast
    import importlib.util

    with open(importlib.util.find_spec(module).origin) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "fairseq" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "fairseq":
            return True
        if "basicConfig" in ast.dump(node):
            return False
    return False


def _bare_root():
    root = logging.getLogger()
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    return root


def _entry_points(tools):
    """tool -> (the function its executable calls, the root logger's handlers and level a fresh
    process of it has at that call). Some fairseq modules call ``logging.basicConfig`` when
    imported, and fairseq's CLIs call it too, so the state depends on which comes first; it is
    recorded here, before any row runs, with a bare root logger for each import. Our tools'
    modules import neither fairseq nor logging set-up (they configure logging inside main)."""
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    root = _bare_root()
    import fairseq  # noqa: F401

    after_fairseq = (list(root.handlers), root.level)
    found = {}
    for tool in tools:
        if tool not in found:
            module = eps[tool].value.split(":")[0]
            root = _bare_root()
            fn = eps[tool].load()
            own = (list(root.handlers), root.level)
            found[tool] = (fn, *(after_fairseq if _imports_fairseq_first(module) else own))
    return found


def _exit_code(fn):
    """Calls ``fn`` as ``sys.exit(fn())`` at a script's top level would: the exit status."""
    try:
        code = fn()
    except SystemExit as e:
        code = e.code
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        return 1
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message"): the message on stderr, status 1
    return 1


def _captured(fn):
    """(result of fn, stdout text, stderr text), both captured at fd 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            result = fn()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
    return result, texts[0], texts[1]


def _files(root):
    if not root or not os.path.isdir(root):
        return []
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root)
                  for n in dirs + names)


def _flop_registered():
    from fairseq.models import ARCH_MODEL_REGISTRY

    return "flop_transformer_lm" in ARCH_MODEL_REGISTRY


def main(rows_path, results_path):
    with open(rows_path) as f:
        rows = json.load(f)
    entries = _entry_points([row["tool"] for row in rows])
    root = logging.getLogger()
    results = {}
    for row in rows:
        fn, handlers, level = entries[row["tool"]]
        if row.get("fresh") and _flop_registered():
            results[row["id"]] = {"error": "a fresh row ran after the FLOP models were registered"}
            continue
        root.handlers[:] = handlers
        root.setLevel(level)
        if os.path.exists(SENTINEL):
            os.unlink(SENTINEL)
        sys.argv = [os.path.join(os.path.dirname(sys.executable), row["tool"]), *map(str, row["args"])]
        start = time.monotonic()
        with warnings.catch_warnings():  # entering resets the once-per-place registries
            rc, out, err = _captured(lambda: _exit_code(fn))
        lines = err.strip().splitlines()
        results[row["id"]] = {"rc": rc, "stdout": out, "stderr": err, "last": lines[-1] if lines else "",
                              "files": _files(row.get("watch")), "sentinel": os.path.exists(SENTINEL),
                              "flop_fairseq": getattr(sys.modules.get("flop_fairseq"), "__file__", None)}
        with open(results_path, "w") as f:  # after every row: a crash still leaves the rows before it
            json.dump(results, f)
        print(f"{row['id']}: {time.monotonic() - start:.1f}s, rc {rc}: {results[row['id']]['last'][:200]}",
              flush=True)


def drive(rows, workdir, cwd=None, python=None, env=None):
    """For a test: runs ``rows`` in one driver process started in ``cwd`` (default ``workdir``,
    which gets rows.json and results.json), by ``python`` (default this interpreter) with ``env``
    (default this process's). Returns (id -> result, the driver's exit and output tail); a row
    missing from the results is one the driver did not get to."""
    import subprocess

    rows_path, results_path = os.path.join(workdir, "rows.json"), os.path.join(workdir, "results.json")
    with open(rows_path, "w") as f:
        json.dump(rows, f)
    proc = subprocess.run([str(python or sys.executable), os.path.abspath(__file__), rows_path, results_path],
                          cwd=cwd or workdir, capture_output=True, text=True,
                          env=dict(env or os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    log = f"driver exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if not os.path.exists(results_path):
        return {}, log
    with open(results_path) as f:
        return json.load(f), log


class Ran:
    """One row's result read the way tests read ``subprocess.run``'s: returncode, stdout, stderr."""

    def __init__(self, res):
        self.returncode, self.stdout, self.stderr = res["rc"], res["stdout"], res["stderr"]
        self.flop_fairseq = res.get("flop_fairseq")  # where the row's flop_fairseq came from


class Batch:
    """A test's chain of CLI calls, collected with ``add`` and run in one driver process by ``run``,
    in order (a call may read what an earlier one wrote, not what it printed). ``add`` takes what
    conftest.run takes and returns a key; ``batch[key]`` is then a ``Ran``. As with conftest.run,
    a failed call with ``check`` (the default) raises: ``run`` raises for the first one (unless told
    not to), ``batch[key]`` for that one."""

    def __init__(self):
        self.rows, self.checks, self.results, self.log = [], {}, None, ""

    def add(self, tool, *args, check=True):
        key = f"{len(self.rows)}-{tool}"
        self.rows.append({"id": key, "tool": tool, "args": [str(a) for a in args]})
        self.checks[key] = check
        return key

    def report_json(self, path):
        """conftest.report_json as a call of this batch: a function giving the report."""
        key = self.add("flop-report", path, "--json")
        return lambda: json.loads(self[key].stdout)

    def eval_lm(self, data_bin, path, *extra):
        """conftest.eval_lm (the same command) as a call of this batch: a function giving
        (loss in base 2, perplexity)."""
        from conftest import USER_DIR

        key = self.add("fairseq-eval-lm", data_bin, "--user-dir", USER_DIR, "--path", path, "--cpu",
                       "--tokens-per-sample", "64", "--max-tokens", "1024", "--gen-subset", "test", *extra)

        def result():
            from flop_fairseq.tools.fairseq_log import parse_eval_lm

            proc = self[key]
            res = parse_eval_lm(proc.stdout + proc.stderr)
            assert res, proc.stdout + proc.stderr
            return res["loss_base2"], res["ppl"]
        return result

    def run(self, workdir, check=True, **kw):
        """``drive``'s keywords (cwd, python, env); workdir gets the driver's rows and results.
        ``check=False``: a failed call raises only where its result is read (calls shared by tests)."""
        os.makedirs(workdir, exist_ok=True)
        self.results, self.log = drive(self.rows, str(workdir), **kw)
        for row in self.rows if check else []:
            if self.checks[row["id"]]:
                self[row["id"]]
        return self

    def __getitem__(self, key):
        res = self.results.get(key)
        assert res is not None and "error" not in res, f"the driver gave no result for {key}: {self.log}"
        ran = Ran(res)
        if self.checks[key] and ran.returncode != 0:
            raise AssertionError(f"{key} failed ({ran.returncode}):\n{ran.stdout[-4000:]}\n{ran.stderr[-4000:]}")
        return ran


if __name__ == "__main__":
    main(*sys.argv[1:])
