"""A small process that starts the benchmarked commands, so their peak RSS is their own.

Linux carries the RSS of the process that forks into the child's ru_maxrss, across exec: a
command forked by the bench (hundreds of MB once its SMTP sink holds 10,000 messages) would
report the bench's size, not its own. Forked from this ~10 MB process instead, os.wait4 gives
the command's own peak. Run with `python -S bench/spawn.py`; one JSON request per line on
stdin, one JSON answer per line on stdout:

    {"op": "run", "argv": [...], "cwd": "...", "env": {...}, "stdout": PATH|null, "stderr": PATH}
        → {"seconds": wall time from fork to exit, "maxrss_kb": ..., "cpu_seconds": user + system,
           "code": exit code}
    {"op": "start", ...same...}  → {"pid": ...}
    {"op": "poll", "pid": N}     → {"code": exit code, or null while it runs}
    {"op": "stop", "pid": N, "timeout": S}  → SIGTERM, after S seconds SIGKILL; then as "run"
"""

import json
import os
import signal
import sys
import time

running = {}  # pid → fork time
finished = {}  # pid → answer, for a process that exited before "stop"


def start(request):
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(request["cwd"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            for fd, path in ((1, request.get("stdout")), (2, request.get("stderr"))):
                target = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(target, fd)
            os.closerange(3, 1024)
            os.execvpe(request["argv"][0], request["argv"], request["env"])
        except BaseException as error:
            os.write(2, f"cannot start {request['argv'][0]}: {error}\n".encode())
        finally:
            os._exit(127)
    running[pid] = started
    return pid


def reap(pid, options=0):
    found, status, usage = os.wait4(pid, options)
    if not found:
        return None
    return {
        "seconds": time.perf_counter() - running.pop(pid),
        "maxrss_kb": usage.ru_maxrss,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "code": os.waitstatus_to_exitcode(status),
    }


def answer(request):
    op = request["op"]
    if op == "run":
        return reap(start(request))
    if op == "start":
        return {"pid": start(request)}
    if op == "poll":
        done = reap(request["pid"], os.WNOHANG)
        if done is None:
            return {"code": None}
        finished[request["pid"]] = done  # reaped: "stop" answers with this
        return done
    if op == "stop":
        pid = request["pid"]
        if pid in finished:
            return finished.pop(pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + request.get("timeout", 10)
        while time.monotonic() < deadline:
            done = reap(pid, os.WNOHANG)
            if done is not None:
                return done
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        return reap(pid)
    raise ValueError(f"unknown op {op!r}")


def main():
    for line in sys.stdin:
        try:
            reply = answer(json.loads(line))
        except Exception as error:  # report it to the bench; keep serving
            reply = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
