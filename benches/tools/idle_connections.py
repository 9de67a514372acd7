#!/usr/bin/env python3
# Usage: idle_connections.py PORT N SERVER_PID idle|sub
# Opens N idle WebSocket connections (optionally subscribed) to a wavecast
# server from this (second) process and reports the server's RSS delta.
import asyncio, base64, os, sys, time, json
port=int(sys.argv[1]); n=int(sys.argv[2]); pid=int(sys.argv[3]); sub=sys.argv[4]=='sub'
def rss(p):
    for l in open(f'/proc/{p}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])*1024
def masked(payload):
    mask=os.urandom(4); n=len(payload)
    hdr=bytes([0x81, 0x80|n]) if n<126 else bytes([0x81,0x80|126])+n.to_bytes(2,'big')
    return hdr+mask+bytes(b^mask[i%4] for i,b in enumerate(payload))
conns=[]
async def one(i):
    src=f"127.0.0.{2+i//20000}"
    r,w=await asyncio.open_connection('127.0.0.1',port, local_addr=(src,0))
    key=base64.b64encode(os.urandom(16)).decode()
    w.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await r.readuntil(b"\r\n\r\n")
    if sub:
        w.write(masked(json.dumps({"id":1,"subscribe":{"channel":"idle"}}).encode()))
        await r.read(200)
    conns.append((r,w))
async def main():
    time.sleep(1); base=[rss(pid) for _ in range(3)]; base=sorted(base)[1]
    sem=asyncio.Semaphore(200)
    async def lim(i):
        async with sem: await one(i)
    t=time.time(); await asyncio.gather(*(lim(i) for i in range(n))); dt=time.time()-t
    await asyncio.sleep(2)
    vals=[]
    for _ in range(3):
        vals.append(rss(pid)); await asyncio.sleep(0.5)
    after=sorted(vals)[1]
    print(json.dumps({"connections":n,"subscribed":sub,"rss_before":base,"rss_after":after,"bytes_per_conn":(after-base)/n,"handshakes_per_s":n/dt}))
asyncio.run(main())
