"""forkyard's preloader: imports a Python app once, then forks workers on request.

forkyard ships this module inside its binary and runs it with the pool's
interpreter, one process per pool generation. The protocol it speaks is described
in docs/preload.md; in short:

- environment: FORKYARD_PRELOAD_FD (a SOCK_SEQPACKET Unix socket to forkyard),
  FORKYARD_PRELOAD_SPEC (JSON: app, server, server_options, imports, gc_freeze);
  both are removed before the app is imported.
- preloader -> forkyard, one JSON object per packet: "ready" once the app is
  imported, "failed" (with the traceback's tail) if it could not be, then
  "forked"/"refused" for each fork request and "called" for each call request.
- forkyard -> preloader: "fork" (with five descriptors: the worker's listening
  socket, its report pipe, its stdout, its stderr and its "go" pipe) and "call".
- each worker reports its post_fork steps as JSON lines on its report pipe, like a
  `forkyard __child` process does, then serves the app on its socket.

The preloader forks twice for each worker, so that the worker is re-parented to
forkyard (PID 1 or a child subreaper), which reaps it and classifies its exit like
any other worker's. It refuses to fork while it has a thread besides its main one.
"""

import errno
import gc
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback

PROTOCOL = 1
EXIT_IMPORT = 3
EXIT_ABORTED = 125
MAX_PACKET = 1 << 20
TRACEBACK_LINES = 30


class HookTimeout(Exception):
    pass


def register_source():
    """Let tracebacks through this module show its lines."""
    src = globals().get("__source__")
    if src:
        import linecache

        name = "forkyard-preloader.py"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)


def resolve(target):
    """The object named "module:attribute" (the attribute may be dotted)."""
    module, _, attribute = target.partition(":")
    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def tail(text, lines=TRACEBACK_LINES, limit=8000):
    text = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return text[-limit:]


class Channel:
    """The SOCK_SEQPACKET socket to forkyard: one JSON object per packet."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.fd = fd

    def send(self, **msg):
        self.sock.send(json.dumps(msg).encode())

    def recv(self):
        data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_PACKET, 8)
        if not data:
            for fd in fds:
                os.close(fd)
            return None, []
        return json.loads(data), fds


def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def other_threads():
    """Every thread of this process but the main one, named."""
    try:
        tids = sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        tids = []
    python = {t.native_id: t for t in threading.enumerate()}
    names = []
    for tid in tids:
        if tid == os.getpid():
            continue
        t = python.get(tid)
        if t is not None:
            kind = "Python thread, daemon" if t.daemon else "Python thread"
            names.append(f"{t.name!r} ({kind}, tid {tid})")
        else:
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            names.append(f"{comm!r} (native thread, tid {tid})")
    return names


def busy_threads():
    """Other threads, after giving ones that are ending a moment to go."""
    deadline = time.monotonic() + 0.2
    while True:
        names = other_threads()
        if not names or time.monotonic() >= deadline:
            return names
        time.sleep(0.02)


def call_with_timeout(fn, seconds):
    """Call `fn()`; raise HookTimeout if it runs longer than `seconds`."""

    def expired(_signum, _frame):
        raise HookTimeout()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call_attempt(item):
    """One attempt of a `call:` hook: None, or {"reason", "message"}."""
    try:
        fn = resolve(item["target"])
        call_with_timeout(fn, item["timeout_s"])
        return None
    except HookTimeout:
        return {
            "reason": "timeout",
            "message": f"call {item['target']} still running after its timeout of {item['timeout_s']}s; interrupted",
        }
    except BaseException as e:  # noqa: BLE001 - a hook's failure is reported, never raised
        return {
            "reason": "exception",
            "message": f"call {item['target']} raised {type(e).__name__}: {e}\n"
            + tail(traceback.format_exc(), 12),
        }


class Preloader:
    def __init__(self):
        register_source()
        self.spec = json.loads(os.environ.pop("FORKYARD_PRELOAD_SPEC"))
        fd = int(os.environ.pop("FORKYARD_PRELOAD_FD"))
        os.environ.pop("FORKYARD_PRELOADER_SOURCE", None)
        self.chan = Channel(fd)
        self.forkyard = os.getppid()
        # What the preloader holds before the app exists: a worker closes these.
        # (The listing's own descriptor is closed again by the time it returns.)
        self.own_fds = {fd for fd in map(int, os.listdir("/proc/self/fd")) if is_open(fd)} - {0, 1, 2}
        self.app = None
        self.server = None

    # -- start ------------------------------------------------------------------

    def load(self):
        spec = self.spec
        if spec["gc_freeze"]:
            # Instagram's recipe: no collection while importing, freeze before
            # each fork, collections on again in the worker.
            gc.disable()
        cwd = os.getcwd()
        if sys.path and sys.path[0] in ("", cwd):
            sys.path[0] = cwd
        else:
            sys.path.insert(0, cwd)
        started = time.monotonic()
        for name in spec["imports"]:
            importlib.import_module(name)
        server = spec["server"]
        if server == "waitress":
            import waitress

            self.server = lambda app, sock, **kw: waitress.serve(app, sockets=[sock], **kw)
        elif server == "uvicorn":
            import uvicorn

            def serve_uvicorn(app, sock, **kw):
                uvicorn.Server(uvicorn.Config(app, **kw)).run(sockets=[sock])

            self.server = serve_uvicorn
        elif server == "wsgiref":
            import wsgiref.simple_server

            self.server = serve_wsgiref
        else:
            self.server = resolve(server)
        self.app = resolve(spec["app"])
        if spec["gc_freeze"]:
            gc.freeze()
        return time.monotonic() - started

    # -- requests ---------------------------------------------------------------

    def run(self):
        try:
            seconds = self.load()
        except BaseException as e:  # noqa: BLE001 - reported to forkyard, then exit
            text = traceback.format_exc()
            sys.stderr.write(text)
            sys.stderr.flush()
            self.chan.send(
                type="failed",
                stage="import",
                error=f"{type(e).__name__}: {e}",
                traceback=tail(text),
            )
            os._exit(EXIT_IMPORT)
        self.chan.send(
            type="ready",
            protocol=PROTOCOL,
            pid=os.getpid(),
            python=sys.version.split()[0],
            import_seconds=seconds,
        )
        while True:
            msg, fds = self.chan.recv()
            if msg is None:
                break
            kind = msg.get("type")
            if kind == "fork":
                self.fork(msg, fds)
            elif kind == "call":
                for fd in fds:
                    os.close(fd)
                error = call_attempt(msg["hook"])
                self.chan.send(type="called", id=msg["id"], error=error)
            else:
                for fd in fds:
                    os.close(fd)
                sys.stderr.write(f"forkyard preloader: unknown request {kind!r}\n")
        os._exit(0)

    def fork(self, msg, fds):
        rid = msg["id"]
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            self.chan.send(type="refused", id=rid, reason="spawn_error",
                           message=f"a fork request needs 5 descriptors, got {len(fds)}")
            return
        threads = busy_threads()
        if threads:
            for fd in fds:
                os.close(fd)
            self.chan.send(
                type="refused",
                id=rid,
                reason="threads",
                message=(
                    f"the preloader has {len(threads)} thread(s) besides its main one: "
                    + ", ".join(threads)
                    + "; a forked copy could deadlock on a lock one of them holds. "
                    "Start threads in post_fork (in each worker), not at import; for a "
                    "native library's pool, set its thread count to 1 in the pool's env "
                    "(e.g. OPENBLAS_NUM_THREADS, OMP_NUM_THREADS)"
                ),
            )
            return
        if self.spec["gc_freeze"]:
            gc.freeze()
        sys.stdout.flush()
        sys.stderr.flush()
        pid_r, pid_w = os.pipe()
        try:
            middle = os.fork()
        except OSError as e:
            os.close(pid_r)
            os.close(pid_w)
            for fd in fds:
                os.close(fd)
            self.chan.send(type="refused", id=rid, reason="spawn_error", message=f"fork: {e}")
            return
        if middle == 0:
            # The intermediate process: fork the worker, put it in its own process
            # group (from both sides, so forkyard can never signal a group that
            # does not exist yet), tell the preloader its pid, and exit, which
            # re-parents the worker to forkyard.
            code = 0
            try:
                os.close(pid_r)
                worker = os.fork()
                if worker == 0:
                    os.close(pid_w)
                    Worker(self, msg, fds).run()  # never returns
                if msg["setsid"]:
                    deadline = time.monotonic() + 2
                    while time.monotonic() < deadline:
                        try:
                            if os.getsid(worker) == worker:
                                break
                        except OSError:
                            break
                        time.sleep(0.0005)
                else:
                    try:
                        os.setpgid(worker, worker)
                    except OSError:
                        pass
                os.write(pid_w, str(worker).encode())
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(pid_w)
        data = b""
        while True:
            chunk = os.read(pid_r, 32)
            if not chunk:
                break
            data += chunk
        os.close(pid_r)
        while True:
            try:
                os.waitpid(middle, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        for fd in fds:
            os.close(fd)
        if data:
            self.chan.send(type="forked", id=rid, pid=int(data))
        else:
            self.chan.send(type="refused", id=rid, reason="spawn_error",
                           message="the intermediate process did not report the worker's pid")


class Worker:
    """The new worker process: post_fork steps, then the server."""

    def __init__(self, preloader, msg, fds):
        self.p = preloader
        self.msg = msg
        self.sock_fd, self.report_fd, self.out_fd, self.err_fd, self.go_fd = fds
        self.report = None

    def send(self, **report):
        if self.report is None:
            return
        try:
            self.report.write(json.dumps(report) + "\n")
            self.report.flush()
        except OSError:
            self.report = None

    def run(self):
        code = 0
        try:
            self.setup()
            self.post_fork()
            self.send(event="exec")
            self.report.close()
            self.report = None
            sock = socket.socket(fileno=self.sock_fd)
            sock.setblocking(True)
            self.p.server(self.p.app, sock, **self.p.spec["server_options"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

    def setup(self):
        msg = self.msg
        if msg["setsid"]:
            try:
                os.setsid()
            except OSError:
                pass
        else:
            try:
                os.setpgid(0, 0)
            except OSError:
                pass
        # The preloader's channel is forkyard's, never the worker's.
        try:
            os.close(self.p.chan.fd)
        except OSError:
            pass
        # Wait until forkyard watches this pid; without its word, go away.
        go = b""
        while True:
            try:
                go = os.read(self.go_fd, 1)
                break
            except InterruptedError:
                continue
        os.close(self.go_fd)
        if go != b"g":
            os._exit(0)
        os.dup2(self.out_fd, 1)
        os.dup2(self.err_fd, 2)
        os.close(self.out_fd)
        os.close(self.err_fd)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(line_buffering=True)
            except (AttributeError, ValueError):
                pass
        self.report = os.fdopen(self.report_fd, "w", buffering=1)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for key, value in msg["env"]:
            os.environ[key] = value
        if msg["close_fds"]:
            keep = {0, 1, 2, self.sock_fd, self.report_fd}
            for fd in self.p.own_fds - keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.p.spec["gc_freeze"]:
            gc.enable()

    def post_fork(self):
        for item in self.msg["post_fork"]:
            kind = item["kind"]
            builtin = None if kind in ("call", "run") else kind
            attempts = item["retries"] + 1
            for number in range(1, attempts + 1):
                started = time.monotonic()
                if kind == "call":
                    error = call_attempt(item)
                elif kind == "run":
                    error = self.run_command(item)
                else:
                    error = self.builtin(kind, item["value"])
                self.send(
                    event="attempt",
                    hook=item["name"],
                    builtin=builtin,
                    number=number,
                    of=attempts,
                    on_failure=item["on_failure"],
                    duration_s=time.monotonic() - started,
                    result={"Ok": None} if error is None else {"Err": error},
                )
                if error is None:
                    break
                if number < attempts:
                    time.sleep(item["retry_delay_s"])
                    continue
                if item["on_failure"] != "skip":
                    self.send(event="abort", hook=item["name"])
                    sys.stderr.write(f"forkyard: post_fork {item['name']}: {error['message']}\n")
                    sys.stderr.flush()
                    os._exit(EXIT_ABORTED)

    def run_command(self, item):
        import subprocess

        env = dict(os.environ)
        env.update(dict(item["env"]))
        env["FORKYARD_PHASE"] = "post_fork"
        try:
            proc = subprocess.Popen(
                item["argv"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as e:
            return {"reason": "spawn_error", "message": f"could not start {item['argv'][0]!r}: {e}"}
        try:
            out, err = proc.communicate(timeout=item["timeout_s"])
            timed_out = False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            out, err = proc.communicate()
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        lines = []
        for stream, data in (("stdout", out), ("stderr", err)):
            for line in data.decode(errors="replace").splitlines():
                lines.append(line)
                self.send(event="output", hook=item["name"], stream=stream, line=line)
        last = "\n".join(lines[-20:])
        suffix = f"; last output:\n{last}" if last else ""
        if timed_out:
            return {"reason": "timeout", "message": f"still running after its timeout of {item['timeout_s']}s; killed with its process group{suffix}"}
        if proc.returncode == 0:
            return None
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            return {"reason": "signal", "message": f"killed by signal {name}{suffix}"}
        return {"reason": "exit", "message": f"exited with code {proc.returncode}{suffix}"}

    def builtin(self, kind, value):
        try:
            apply_builtin(kind, value, self.p.forkyard)
            return None
        except Exception as e:  # noqa: BLE001
            return {"reason": "spawn_error", "message": f"{kind}: {e}"}


def apply_builtin(kind, value, forkyard):
    root = os.geteuid() == 0
    if kind == "setsid":
        return  # done first thing, with the process group
    if kind == "umask":
        os.umask(value)
    elif kind == "rlimits":
        import resource

        for name, limit in value.items():
            v = resource.RLIM_INFINITY if limit is None else limit
            resource.setrlimit(getattr(resource, "RLIMIT_" + name.upper()), (v, v))
    elif kind == "nice":
        os.setpriority(os.PRIO_PROCESS, 0, value)
    elif kind == "oom_score_adj":
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    elif kind == "group":
        if root:
            import grp

            gid = int(value) if str(value).isdigit() else grp.getgrnam(value).gr_gid
            os.setgroups([gid])
            os.setgid(gid)
    elif kind == "user":
        if root:
            import pwd

            user = pwd.getpwuid(int(value)) if str(value).isdigit() else pwd.getpwnam(value)
            gid = user.pw_gid if os.getegid() == 0 else os.getegid()
            os.initgroups(user.pw_name, gid)
            if os.getegid() == 0:
                os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ["HOME"] = user.pw_dir
            os.environ["USER"] = user.pw_name
            os.environ["LOGNAME"] = user.pw_name
    elif kind == "parent_death_signal":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(value), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        if os.getppid() != forkyard:
            os._exit(EXIT_ABORTED)
    elif kind == "seed_env":
        os.environ[value] = os.urandom(32).hex()
    elif kind == "close_fds":
        return  # applied with the worker's set-up
    else:
        raise ValueError(f"unknown built-in {kind!r}")


def serve_wsgiref(app, sock, **options):
    """The standard library's single-threaded server, on a socket it did not bind."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Handler(WSGIRequestHandler):
        def log_message(self, *args):
            pass  # forkyard's access log (log.access) covers requests

    class Server(WSGIServer):
        def server_bind(self):
            pass

        def get_request(self):
            conn, addr = self.socket.accept()
            return conn, addr if isinstance(addr, tuple) else ("unix", 0)

    if options:
        raise TypeError(f"wsgiref takes no server_options, got {sorted(options)}")
    srv = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = sock
    name = sock.getsockname()
    srv.server_name = "localhost"
    srv.server_port = name[1] if isinstance(name, tuple) else 0
    srv.setup_environ()
    srv.set_app(app)
    srv.serve_forever()


Preloader().run()
