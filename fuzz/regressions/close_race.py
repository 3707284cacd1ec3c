#!/usr/bin/env python3
"""Reproduces the lost-close-reply race against a natter-server binary.

    cargo build --release -p natter-server
    python3 fuzz/regressions/close_race.py target/release/natter-server [REPS]

Per connection: upgrade, read the welcome, send one request, wait DELAY,
send a close 1000, then read until EOF. RFC 6455 5.5.1 requires a close frame
in answer. 'NOCLOSE' counts connections that ended without one. The reply
may be dropped (the server discards queued frames on a peer close), but the
close frame must not be.
"""
import socket, struct, subprocess, sys, time, re, os, threading

MASK=b'\x37\xfa\x21\x3d'
def frame(op, payload, fin=True):
    n=len(payload); b=bytes([(0x80 if fin else 0)|op])
    b+=bytes([0x80|n]) if n<126 else bytes([0x80|126])+struct.pack('>H',n)
    return b+MASK+bytes(c^MASK[i%4] for i,c in enumerate(payload))
def frames(data):
    out=[];i=0
    while i+2<=len(data):
        op=data[i]&15; n=data[i+1]&127; h=2
        if n==126: n=struct.unpack('>H',data[i+2:i+4])[0]; h=4
        if i+h+n>len(data): break
        out.append((op,data[i+h:i+h+n])); i+=h+n
    return out
def one(port, delay, req):
    s=socket.create_connection(('127.0.0.1',port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    buf=b''
    while b'\r\n\r\n' not in buf: buf+=s.recv(4096)
    buf=buf.split(b'\r\n\r\n',1)[1]
    while not frames(buf): buf+=s.recv(4096)
    s.sendall(frame(1,req))
    t=time.perf_counter()
    while time.perf_counter()-t<delay: pass
    s.sendall(frame(8,struct.pack('>H',1000)))
    s.settimeout(3)
    try:
        while True:
            d=s.recv(65536)
            if not d: break
            buf+=d
    except socket.timeout: pass
    s.close()
    ops=[op for op,_ in frames(buf)[1:]]
    return ('reply' if 1 in ops else 'noreply') + '+' + ('close' if 8 in ops else 'NOCLOSE')
srv=subprocess.Popen([sys.argv[1],'--listen','127.0.0.1:0','--rate','0'],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL)
port=int(re.search(r':(\d+)/ws',srv.stdout.readline().decode()).group(1))
req=b'{"type":"rooms","id":1}'
for delay in [0, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3]:
    res={}
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 200):
        r=one(port,delay,req); res[r]=res.get(r,0)+1
    print(f"delay {delay*1e6:.0f}us: {res}", flush=True)
srv.terminate(); srv.wait()
