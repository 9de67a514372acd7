//! permessage-deflate (RFC 7692) against the real binary: what goes on the
//! wire (a raw client that offers the extension sees RSV1 frames above the
//! threshold, plain frames under it and from a server without
//! `--compression`), the close codes of bad compressed input over a real
//! socket, and interoperation with real clients that speak it: Python's
//! `websockets` (compression on by default), Chromium, and Node's `ws` with
//! `perMessageDeflate`, each sending a compressed publication and reading
//! it back compressed.
//!
//! Needs Debian's python3-websockets (`/usr/bin/python3`) and chromium
//! (`/usr/bin/chromium`), the `ws` package of clients/js and the
//! puppeteer-core of tests/browser (`npm ci` in each); scripts/test
//! installs all four before it runs the tests. Chromium is started and
//! closed by its puppeteer script, and killed by its own PID if it hangs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use wavecast_core::deflate::Codec;
use wavecast_core::frame::{self, OpCode};
use wavecast_tests::pubsub::TestServer;
use wavecast_tests::{RawClient, Request};

const T: Duration = Duration::from_secs(10);
const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A JSON value whose encoding is about `n` bytes.
fn doc(n: usize) -> Value {
    let items: Vec<Value> = (0..n / 40)
        .map(|i| json!({"id": i, "sym": "ACME", "px": 100 + i % 7}))
        .collect();
    json!({ "items": items })
}

fn raw(server: &TestServer, offer: Option<&str>) -> (RawClient, Option<String>) {
    let mut req = Request::upgrade(server.addr(), "/ws");
    if let Some(o) = offer {
        req = req.set("Sec-WebSocket-Extensions", o);
    }
    let client = RawClient::handshake(server.addr(), &req)
        .unwrap_or_else(|r| panic!("refused: {}", r.status));
    let answer = client.extensions().map(str::to_owned);
    (client, answer)
}

/// Subscribes `c` to `channel` (uncompressed command) and takes the reply.
fn subscribe(c: &mut RawClient, channel: &str) {
    let cmd = json!({"id": 1, "subscribe": {"channel": channel}}).to_string();
    c.send_frame(true, OpCode::Text, cmd.as_bytes()).unwrap();
    let reply = c.expect_frame(T);
    assert!(String::from_utf8_lossy(&reply.payload).contains("\"id\":1"));
}

/// The next data frame's (RSV1, inflated payload).
fn next_data(c: &mut RawClient) -> (bool, usize, Value) {
    let f = c.expect_frame(T);
    assert_eq!(f.opcode, OpCode::Text);
    let wire = f.payload.len();
    let payload = if f.rsv1 {
        Codec::new(1)
            .inflate(&f.payload, 1 << 20)
            .expect("valid deflate")
    } else {
        f.payload.to_vec()
    };
    (f.rsv1, wire, serde_json::from_slice(&payload).unwrap())
}

#[tokio::test]
async fn frames_over_the_threshold_are_compressed_on_the_wire() {
    let server = TestServer::start(&["--compression"]);
    let (mut c, answer) = raw(&server, Some(OFFER));
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let (mut plain, none) = raw(&server, None);
    assert_eq!(none, None, "no offer, no extension");
    subscribe(&mut c, "news");
    subscribe(&mut plain, "news");

    let big = doc(4096);
    server.api_publish("news", &big).await;
    let (rsv1, wire, push) = next_data(&mut c);
    assert!(rsv1, "a 4 KiB publication is compressed");
    assert_eq!(push["push"]["pub"]["data"], big);
    let (prsv1, pwire, ppush) = next_data(&mut plain);
    assert!(!prsv1);
    assert_eq!(ppush, push);
    assert!(wire * 3 < pwire, "compressed {wire} bytes vs {pwire}");

    let small = json!({"price": 101.5});
    server.api_publish("news", &small).await;
    let (rsv1, _, push) = next_data(&mut c);
    assert!(!rsv1, "under the 1 KiB threshold: plain");
    assert_eq!(push["push"]["pub"]["data"], small);
}

#[tokio::test]
async fn threshold_and_off_by_default() {
    let server = TestServer::start(&["--compression", "--compression-threshold", "64KiB"]);
    let (mut c, answer) = raw(&server, Some(OFFER));
    assert!(answer.is_some());
    subscribe(&mut c, "news");
    server.api_publish("news", &doc(4096)).await;
    assert!(!next_data(&mut c).0, "4 KiB is under a 64 KiB threshold");

    let off = TestServer::start(&[]);
    let (_, answer) = raw(&off, Some(OFFER));
    assert_eq!(answer, None, "off by default: the offer is declined");
}

/// A client's compressed publish is inflated; bad compressed input gets
/// its RFC close code over a real socket.
#[tokio::test]
async fn compressed_input_and_its_close_codes() {
    let server = TestServer::start(&["--compression", "--max-message-size", "16KiB"]);
    let (mut c, _) = raw(&server, Some(OFFER));
    subscribe(&mut c, "news");
    let data = doc(8000);
    let cmd = json!({"id": 2, "publish": {"channel": "news", "data": data}}).to_string();
    let z = Codec::new(6).compress(cmd.as_bytes()).unwrap().to_vec();
    let mut f = c.masked_frame(true, OpCode::Text, &z);
    frame::set_rsv1(&mut f);
    c.send_raw(&f).unwrap();
    let mut got_pub = false;
    let mut got_reply = false;
    while !(got_pub && got_reply) {
        let (_, _, v) = next_data(&mut c);
        if v["id"] == 2 {
            assert!(v.get("error").is_none(), "{v}");
            got_reply = true;
        } else {
            assert_eq!(v["push"]["pub"]["data"], data);
            got_pub = true;
        }
    }

    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "a bomb past --max-message-size",
            Codec::new(9)
                .compress(&vec![b' '; 1 << 20])
                .unwrap()
                .to_vec(),
            1009,
        ),
        ("invalid deflate data", vec![0xff, 0xff, 0xff, 0xff], 1007),
        (
            "compressed invalid UTF-8",
            Codec::new(1).compress(b"\xff\xfe").unwrap().to_vec(),
            1007,
        ),
    ];
    for (what, payload, code) in cases {
        let (mut c, _) = raw(&server, Some(OFFER));
        let mut f = c.masked_frame(true, OpCode::Text, &payload);
        frame::set_rsv1(&mut f);
        c.send_raw(&f).unwrap();
        assert_eq!(c.expect_close(T), Some(code), "{what}");
    }
    let (mut c, _) = raw(&server, Some(OFFER));
    let mut f = c.masked_frame(true, OpCode::Ping, b"x");
    frame::set_rsv1(&mut f);
    c.send_raw(&f).unwrap();
    assert_eq!(c.expect_close(T), Some(1002), "RSV1 on a ping");

    // Without the extension negotiated RSV1 is a protocol error.
    let (mut c, _) = raw(&server, None);
    let mut codec = Codec::new(1);
    let mut f = c.masked_frame(true, OpCode::Text, codec.compress(b"{}").unwrap());
    frame::set_rsv1(&mut f);
    c.send_raw(&f).unwrap();
    assert_eq!(c.expect_close(T), Some(1002));
}

/// Runs a client script: it prints `EXT <extensions>`, subscribes, prints
/// `READY`, publishes `data` (compressed by the client), and prints the
/// publication it gets back as one JSON line.
fn run_client(mut child: Child) -> (String, Value) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut next = || {
        lines
            .next()
            .unwrap_or_else(|| panic!("client ended early"))
            .unwrap()
    };
    let ext = next();
    let ready = next();
    assert_eq!(ready, "READY");
    let echoed: Value = serde_json::from_str(&next()).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    (ext, echoed)
}

#[tokio::test]
async fn python_websockets_negotiates_and_round_trips() {
    let server = TestServer::start(&["--compression"]);
    let data = doc(4096);
    let script = r#"
import asyncio, json, sys
import websockets
async def main():
    async with websockets.connect(sys.argv[1], max_size=None) as ws:
        print("EXT", ";".join(e.name + str(vars(e)) for e in ws.extensions), flush=True)
        await ws.send(json.dumps({"id": 1, "subscribe": {"channel": "py"}}))
        json.loads(await ws.recv())
        print("READY", flush=True)
        await ws.send(json.dumps({"id": 2, "publish": {"channel": "py", "data": json.loads(sys.argv[2])}}))
        while True:
            m = json.loads(await ws.recv())
            if "push" in m:
                print(json.dumps(m["push"]["pub"]["data"]), flush=True)
                return
asyncio.run(main())
"#;
    let child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            script,
            &format!("ws://{}/ws", server.addr()),
            &data.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with python3-websockets (apt install python3-websockets)");
    let (ext, echoed) = run_client(child);
    assert!(ext.starts_with("EXT permessage-deflate"), "{ext}");
    assert!(ext.contains("'remote_no_context_takeover': True"), "{ext}");
    assert!(ext.contains("'local_no_context_takeover': True"), "{ext}");
    assert_eq!(echoed, data);
}

#[tokio::test]
async fn node_ws_with_per_message_deflate_round_trips() {
    let server = TestServer::start(&["--compression"]);
    let data = doc(4096);
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/js/node_modules/ws");
    assert!(
        ws.exists(),
        "{} missing: run `npm ci` in clients/js",
        ws.display()
    );
    let script = r#"
const WebSocket = require(process.argv[1]);
const ws = new WebSocket(process.argv[2], { perMessageDeflate: true });
let ready = false;
ws.on("open", () => {
  // `extensions` names them; the accepted parameters are on ws's
  // extension object (`params`).
  console.log("EXT " + ws.extensions + " " + JSON.stringify(ws._extensions["permessage-deflate"].params));
  ws.send(JSON.stringify({ id: 1, subscribe: { channel: "node" } }));
});
ws.on("message", (raw) => {
  const m = JSON.parse(raw.toString());
  if (!ready) {
    ready = true;
    console.log("READY");
    ws.send(JSON.stringify({ id: 2, publish: { channel: "node", data: JSON.parse(process.argv[3]) } }));
  } else if (m.push) {
    console.log(JSON.stringify(m.push.pub.data));
    ws.close();
  }
});
ws.on("error", (e) => { console.error(e); process.exit(1); });
"#;
    let child = Command::new("node")
        .args([
            "-e",
            script,
            ws.to_str().unwrap(),
            &format!("ws://{}/ws", server.addr()),
            &data.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let (ext, echoed) = run_client(child);
    assert!(ext.starts_with("EXT permessage-deflate "), "{ext}");
    assert!(ext.contains("\"server_no_context_takeover\":true"), "{ext}");
    assert!(ext.contains("\"client_no_context_takeover\":true"), "{ext}");
    assert_eq!(echoed, data);
}

/// Chromium (Debian's, driven by tests/browser's puppeteer-core) offers
/// permessage-deflate by default: it negotiates it, sends a 4 KiB
/// publication and reads it back, compressed both ways.
#[tokio::test]
async fn chromium_negotiates_and_round_trips() {
    let server = TestServer::start(&["--compression"]);
    let data = doc(4096);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let puppeteer = root.join("tests/browser/node_modules/puppeteer-core");
    assert!(
        puppeteer.exists(),
        "{} missing: run `npm ci` in tests/browser",
        puppeteer.display()
    );
    let script = r#"
const puppeteer = require(process.argv[1]);
(async () => {
  const browser = await puppeteer.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [...(process.getuid() === 0 ? ["--no-sandbox"] : []), "--disable-dev-shm-usage", "--disable-gpu"],
  });
  const kill = setTimeout(() => { browser.process()?.kill("SIGKILL"); process.exit(3); }, 30000);
  try {
    const page = await browser.newPage();
    const out = await page.evaluate((url, data) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      let ready = false, ext = "";
      ws.onerror = () => reject(new Error("websocket error"));
      ws.onopen = () => { ext = ws.extensions; ws.send(JSON.stringify({ id: 1, subscribe: { channel: "chromium" } })); };
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (!ready) { ready = true; ws.send(JSON.stringify({ id: 2, publish: { channel: "chromium", data } })); }
        else if (m.push) { ws.close(); resolve({ ext, data: m.push.pub.data }); }
      };
    }), process.argv[2], JSON.parse(process.argv[3]));
    console.log("EXT " + out.ext);
    console.log("READY");
    console.log(JSON.stringify(out.data));
  } finally {
    clearTimeout(kill);
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
"#;
    let child = Command::new("node")
        .args([
            "-e",
            script,
            puppeteer.to_str().unwrap(),
            &format!("ws://{}/ws", server.addr()),
            &data.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let (ext, echoed) = run_client(child);
    assert_eq!(
        ext,
        "EXT permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(echoed, data);
}
