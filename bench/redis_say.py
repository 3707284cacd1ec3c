"""Redis's own time per natter `say` script, in isolation.

Starts a private redis-server on a free port (persistence off), loads
server/src/cluster/lua/say.lua (with its prelude) and runs it 20 000 times,
pipelined 500 at a time, from one connection; prints Redis's
usec_per_call for EVALSHA (INFO commandstats), also for an empty script
(what calling a script costs at all). Stops the Redis it started.

    python3 bench/redis_say.py
"""
import os
import socket
import subprocess
import tempfile
import time

LUA = os.path.join(os.path.dirname(__file__), "..", "server", "src", "cluster", "lua")


def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def reply(f):
    line = f.readline()
    kind = line[:1]
    if kind in b"+-:":
        return line[1:-2]
    if kind == b"$":
        n = int(line[1:])
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [reply(f) for _ in range(max(int(line[1:]), 0))]
    raise RuntimeError(f"unexpected reply {line!r}")


def per_call(sock, f, body, n=20000, batch=500):
    prelude = open(os.path.join(LUA, "prelude.lua")).read()
    sock.sendall(cmd("FLUSHALL"))
    reply(f)
    sock.sendall(cmd("SCRIPT", "LOAD", prelude + body))
    sha = reply(f)
    sock.sendall(cmd("HSET", "natter:mem:r", "n|1", "alice"))
    reply(f)
    sock.sendall(cmd("CONFIG", "RESETSTAT"))
    reply(f)
    head = '{"type":"message","room":"r","seq":'
    tail = ',"from":"alice","text":"hello there","ts":1}'
    calls = b"".join(cmd("EVALSHA", sha, 0, "n", "1", "r", head, tail, 100, 4096) for _ in range(batch))
    for _ in range(n // batch):
        sock.sendall(calls)
        for _ in range(batch):
            reply(f)
    sock.sendall(cmd("INFO", "commandstats"))
    info = reply(f).decode()
    line = next(l for l in info.splitlines() if l.startswith("cmdstat_evalsha:"))
    return dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))["usec_per_call"]


def main():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with tempfile.TemporaryDirectory() as d:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    sock = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise SystemExit("redis-server did not start")
            f = sock.makefile("rb")
            say = open(os.path.join(LUA, "say.lua")).read()
            print(f"say.lua:      {per_call(sock, f, say)} µs per call (Redis's own time)")
            print(f"empty script: {per_call(sock, f, 'return 1')} µs per call")
        finally:
            redis.terminate()
            redis.wait()


main()
