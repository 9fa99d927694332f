# Copyright 2026 The cola-diffusers Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
`python -m cola_diffusers.cli` runs for the tests, each in a process of its own, forked from a process that has
already imported torch, diffusers, transformers and accelerate.

A run is a real process: its own exit status, stdout and stderr, working folder and environment, and it can be
killed at any moment (SIGKILL in the crash tests). It runs the CLI's `__main__` as `python -m` does, and ends as an
interpreter does (non-daemon threads joined, `atexit` handlers run, streams flushed). What it shares with the other
runs is the ~10 s of CPU those imports take (on a 2-core test machine), paid once per test session instead of once
per run.

What a fresh interpreter adds is not covered here: the CLI's own imports at start-up (`tests/test_cli.py` checks that
argument errors and bad input import no heavy module), output printed while importing, and environment variables the
libraries read when imported. Those variables (`HF_*`, `TRANSFORMERS_*`, `OMP_*`, `TQDM_*`, ...) therefore pick the
forking process: runs that differ in them get one each. Tests of start-up itself, of `accelerate launch` and of the
servers' start-up start their processes afresh.

`command_folder` writes a `cola-diffusers` command that runs the same way, for shell scripts (the docs' bash blocks):
it hands its arguments, working folder, environment and standard streams to the forking process over a Unix socket,
and exits as its run does.
"""

import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading


# Read by torch, huggingface_hub, transformers, diffusers, tokenizers or tqdm (its bars' defaults) when imported.
IMPORT_TIME_VARIABLES = re.compile(
    r"^(HF_|HUGGINGFACE_|TRANSFORMERS_|DIFFUSERS_|TOKENIZERS_|TORCH|OMP_|MKL_|PYTHON|TQDM_)"
)

# The forking process: imports what the CLI's commands import, then forks one child per request line (JSON) on its
# stdin and reports on its stdout each child's pid, then its exit status (negative: the signal that ended it). It also
# forks one child per message on the listening Unix socket of fd `argv[1]` (a request, with the sender's stdin, stdout
# and stderr) and answers on that connection with the pid, then the exit status; or with `fallback` when the
# request's import-time variables (those `argv[2]` matches) differ from its own. `children` maps a child's pid to its
# request id or to its connection.
SERVER = r"""
import atexit, json, os, re, runpy, select, socket, sys, threading, traceback

requests, events = os.dup(0), os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
listener = socket.socket(fileno=int(sys.argv[1]))

def import_time(environment):
    return {name: value for name, value in environment.items() if re.match(sys.argv[2], name)}

imported_with = import_time(os.environ)

import torch, transformers, accelerate
import cola_diffusers.pipelines.cola_dlm.pipeline_cola_dlm
import cola_diffusers.training.trainer
import cola_diffusers.evaluation.generation
import cola_diffusers.cli

def report(**event):
    os.write(events, (json.dumps(event) + "\n").encode())

def exit_code(exit):
    if exit.code is None or isinstance(exit.code, int):
        return exit.code or 0
    print(exit.code, file=sys.stderr)
    return 1

def run(request, streams=None):
    os.close(requests)
    os.close(events)
    listener.close()
    for connection in children.values():
        if isinstance(connection, socket.socket):
            connection.close()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if streams:
        for fd, stream in enumerate(streams):
            os.dup2(stream, fd)
            os.close(stream)
    else:
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.argv = ["-m", *request["arguments"]]
    code = 0
    try:
        runpy.run_module("cola_diffusers.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        code = exit_code(exit)
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

def fork(request, streams=None):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        run(request, streams)
    return pid

def serve_connection():
    connection, _ = listener.accept()
    message, streams, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    request = json.loads(message)
    if import_time(request["env"]) != imported_with:
        connection.send(b'{"fallback": true}')
        connection.close()
    else:
        pid = fork(request, streams)
        connection.send(json.dumps({"pid": pid}).encode())
        children[pid] = connection
    for stream in streams:
        os.close(stream)

def ended(pid, returncode):
    waiting = children.pop(pid)
    if isinstance(waiting, socket.socket):
        waiting.send(json.dumps({"returncode": returncode}).encode())
        waiting.close()
    else:
        report(id=waiting, returncode=returncode)

children, pending = {}, b""
while True:
    readable, _, _ = select.select([requests, listener], [], [], 0.01)
    if listener in readable:
        serve_connection()
    if requests in readable:
        data = os.read(requests, 65536)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            request = json.loads(line)
            pid = fork(request)
            children[pid] = request["id"]
            report(id=request["id"], pid=pid)
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        ended(pid, os.waitstatus_to_exitcode(status))
for pid in children:
    os.kill(pid, 9)
"""


class ForkServer:
    """One forking process, for runs whose import-time environment is `environment`."""

    def __init__(self, environment: dict):
        # Its own stderr (what goes wrong in the server itself, not in a run) goes to a file of its own.
        self.log = tempfile.NamedTemporaryFile(prefix="cli-fork-server-", suffix=".log", delete=False)
        # Listening before the process starts: a command may connect while it is still importing.
        self.socket = os.path.join(tempfile.mkdtemp(prefix="cli-fork-server-"), "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.socket)
        listener.listen(64)
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(listener.fileno()), IMPORT_TIME_VARIABLES.pattern],
            pass_fds=[listener.fileno()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=environment,
        )
        listener.close()  # the forking process has its own
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.runs = {}
        threading.Thread(target=self.read_events, daemon=True).start()

    def read_events(self):
        for line in self.process.stdout:
            event = json.loads(line)
            self.runs[event["id"]].update(event)

    def start(self, request: dict) -> "CliProcess":
        with self.lock:
            run = CliProcess(next(self.ids), request)
            self.runs[run.id] = run
            self.process.stdin.write((json.dumps({"id": run.id, **request}) + "\n").encode())
            self.process.stdin.flush()
        return run


class CliProcess:
    """A forked run, with the parts of `subprocess.Popen` the tests use."""

    def __init__(self, run_id: int, request: dict):
        self.id, self.request = run_id, request
        self.pid = self.returncode = None
        self.started, self.ended = threading.Event(), threading.Event()

    def update(self, event: dict):
        if "pid" in event:
            self.pid = event["pid"]
            self.started.set()
        if "returncode" in event:
            self.returncode = event["returncode"]
            self.ended.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.request["arguments"], timeout)
        return self.returncode

    def send_signal(self, signal: int):
        if not self.started.wait(60):
            raise RuntimeError(f"the fork server did not start {self.request['arguments']}")
        if self.returncode is None:
            try:
                os.kill(self.pid, signal)
            except ProcessLookupError:  # it ended, and the fork server has not said so yet
                pass

    def kill(self):
        self.send_signal(9)

    def output(self) -> tuple[str, str]:
        """The run's stdout and stderr, once it has ended ("" where they were not kept)."""
        texts = []
        for path in (self.request["stdout"], self.request["stderr"]):
            if path == os.devnull:
                texts.append("")
                continue
            with open(path, encoding="utf-8", errors="replace") as file:
                texts.append(file.read())
            os.remove(path)
        if self.request["stdout"] != os.devnull:
            os.rmdir(os.path.dirname(self.request["stdout"]))
        return texts[0], texts[1]

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.output()


SERVERS: dict[tuple, ForkServer] = {}
SERVERS_LOCK = threading.Lock()


def fork_server(environment: dict) -> ForkServer:
    """The forking process for runs with `environment`, started on first use."""
    key = tuple(sorted((name, value) for name, value in environment.items() if IMPORT_TIME_VARIABLES.match(name)))
    with SERVERS_LOCK:
        if key not in SERVERS:
            SERVERS[key] = ForkServer(environment)
        return SERVERS[key]


def start_cli(arguments: list[str], env: dict | None = None, cwd=None, output: bool = True) -> CliProcess:
    """
    Starts `python -m cola_diffusers.cli *arguments` as a forked process, with `env` (default: this process's
    environment) and the working folder `cwd`; its stdout and stderr are kept (`communicate`) unless `output` is
    false.
    """
    environment = dict(os.environ if env is None else env)
    server = fork_server(environment)
    if output:
        folder = tempfile.mkdtemp(prefix="cli-run-")
        stdout, stderr = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
    else:
        stdout = stderr = os.devnull
    request = {"arguments": [str(argument) for argument in arguments], "env": environment}
    request.update(cwd=os.path.abspath(cwd or os.getcwd()), stdout=stdout, stderr=stderr)
    return server.start(request)


def run_cli(arguments: list[str], env: dict | None = None, cwd=None, timeout: float = 300, check: bool = False):
    """
    Runs `python -m cola_diffusers.cli *arguments` (see `start_cli`) to its end: a `CompletedProcess`, as
    `subprocess.run(..., capture_output=True, text=True, check=check)` returns.
    """
    process = start_cli(arguments, env=env, cwd=cwd)
    stdout, stderr = process.communicate(timeout)
    result = subprocess.CompletedProcess(["cola-diffusers", *map(str, arguments)], process.returncode, stdout, stderr)
    if check:
        result.check_returncode()
    return result


# `cola-diffusers` for shell scripts: Python without `site` starts in ~20 ms; a run whose import-time variables differ
# from the forking process's is started afresh, as the installed command would be.
COMMAND = """#!{python} -IS
import json, os, signal, socket, sys

connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
connection.connect({socket!r})
request = {{"arguments": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
reply = json.loads(connection.recv(1024))
if reply.get("fallback"):
    os.execv({python!r}, [{python!r}, "-m", "cola_diffusers.cli", *sys.argv[1:]])
for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(number, lambda number, frame: os.kill(reply["pid"], number))
code = json.loads(connection.recv(1024))["returncode"]
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def command_folder(folder, env: dict) -> str:
    """
    Writes `folder/cola-diffusers`, a command that runs `python -m cola_diffusers.cli` as a process forked for `env`
    (the import-time variables of the scripts that will call it), with the caller's arguments, folder, environment
    and standard streams; returns `folder`, to put first on `PATH`.
    """
    path = os.path.join(folder, "cola-diffusers")
    with open(path, "w") as file:
        file.write(COMMAND.format(python=sys.executable, socket=fork_server(dict(env)).socket))
    os.chmod(path, 0o755)
    return str(folder)
