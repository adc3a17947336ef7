"""Runs a script as the ranks of a gloo group on 127.0.0.1: one subprocess
per rank, a free port, one thread each, a hard time limit (all ranks are
killed when it passes). The script reads RANK / WORLD_SIZE and calls
init_process_group("gloo") (env://)."""
import os
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script, world_size, args, log_dir, timeout):
    """Runs `script args...` as ranks 0..world_size-1; returns the wall time.
    Raises AssertionError, with every rank's output, if a rank fails or the
    ranks run past `timeout` seconds."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world_size),
               GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    logs = [os.path.join(log_dir, f"rank{rank}.log") for rank in range(world_size)]
    start = time.monotonic()
    procs = []
    for rank, log in enumerate(logs):
        with open(log, "w") as out:
            procs.append(subprocess.Popen([sys.executable, script, *map(str, args)], env=dict(env, RANK=str(rank)),
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    timed_out = False
    try:
        for p in procs:
            p.wait(timeout=max(0.1, start + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # each rank leads its own session
                p.wait()
    elapsed = time.monotonic() - start
    failed = timed_out or any(p.returncode != 0 for p in procs)
    if failed:
        report = "\n".join(f"--- rank {rank} (exit {p.returncode}):\n{open(log).read()[-4000:]}"
                           for rank, (p, log) in enumerate(zip(procs, logs)))
        why = f"timed out after {timeout} s" if timed_out else "a rank failed"
        raise AssertionError(f"{os.path.basename(script)} at world size {world_size}: {why}\n{report}")
    return elapsed
