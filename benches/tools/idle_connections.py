#!/usr/bin/env python3
# Usage: idle_connections.py PORT N SERVER_PID idle|sub|sse [deflate] [tls]
# Opens N idle WebSocket connections (optionally subscribed), or N idle
# Server-Sent Events streams of one channel (`sse`: GET /sse?channel=idle,
# read up to its `open` event), to a wavecast server from this (second)
# process and reports the server's RSS and RssAnon deltas. With `deflate`,
# each WebSocket offers permessage-deflate and checks that the server
# accepted it (a server run with --compression). With `tls`, over TLS (a
# server started with --tls-cert/--tls-key; the certificate is not
# checked: only the server's memory is measured).
import asyncio, base64, os, ssl, sys, time, json
port=int(sys.argv[1]); n=int(sys.argv[2]); pid=int(sys.argv[3]); sub=sys.argv[4]=='sub'; sse=sys.argv[4]=='sse'
deflate='deflate' in sys.argv[5:]
tls=None
if 'tls' in sys.argv[5:]:
    tls=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); tls.check_hostname=False; tls.verify_mode=ssl.CERT_NONE
def status(p, key):
    for l in open(f'/proc/{p}/status'):
        if l.startswith(key): return int(l.split()[1])*1024
def rss(p): return status(p, 'VmRSS')
def anon(p): return status(p, 'RssAnon')
def masked(payload):
    mask=os.urandom(4); n=len(payload)
    hdr=bytes([0x81, 0x80|n]) if n<126 else bytes([0x81,0x80|126])+n.to_bytes(2,'big')
    return hdr+mask+bytes(b^mask[i%4] for i,b in enumerate(payload))
conns=[]
async def one(i):
    src=f"127.0.0.{2+i//20000}"
    if tls:
        r,w=await asyncio.open_connection('127.0.0.1',port, local_addr=(src,0), ssl=tls, server_hostname='localhost')
    else:
        r,w=await asyncio.open_connection('127.0.0.1',port, local_addr=(src,0))
    if sse:
        w.write(b"GET /sse?channel=idle HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        await r.readuntil(b"event: open\n")
        await r.readuntil(b"\n\n")
        conns.append((r,w))
        return
    key=base64.b64encode(os.urandom(16)).decode()
    ext="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    w.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode())
    head=await r.readuntil(b"\r\n\r\n")
    if deflate: assert b"permessage-deflate" in head, head
    if sub:
        w.write(masked(json.dumps({"id":1,"subscribe":{"channel":"idle"}}).encode()))
        await r.read(200)
    conns.append((r,w))
async def main():
    time.sleep(1); base=[rss(pid) for _ in range(3)]; base=sorted(base)[1]; base_anon=anon(pid)
    sem=asyncio.Semaphore(200)
    async def lim(i):
        async with sem: await one(i)
    t=time.time(); await asyncio.gather(*(lim(i) for i in range(n))); dt=time.time()-t
    await asyncio.sleep(2)
    vals=[]; anons=[]
    for _ in range(3):
        vals.append(rss(pid)); anons.append(anon(pid)); await asyncio.sleep(0.5)
    after=sorted(vals)[1]; after_anon=sorted(anons)[1]
    print(json.dumps({"connections":n,"mode":sys.argv[4],"deflate":deflate,"tls":bool(tls),"rss_before":base,"rss_after":after,"bytes_per_conn":(after-base)/n,"anon_bytes_per_conn":(after_anon-base_anon)/n,"handshakes_per_s":n/dt}))
asyncio.run(main())
