//! `GET /metrics` reports the server's figures in Prometheus text format.

use std::time::Duration;

use wavecast_tests::{http_exchange, RawClient, Request, Server};

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_connections_and_memory() {
    let server = Server::start(&["--max-connections", "77"]);
    let get = |_: ()| {
        let resp = http_exchange(
            server.addr(),
            &Request::get(server.addr(), "/metrics").to_bytes(),
            Duration::from_secs(5),
        )
        .expect("metrics answered");
        assert_eq!(resp.status, 200);
        assert!(resp
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"));
        String::from_utf8(resp.body.clone()).expect("metrics are text")
    };
    let body = get(());
    assert_eq!(metric(&body, "wavecast_connections"), Some(0.0), "{body}");
    assert_eq!(metric(&body, "wavecast_max_connections"), Some(77.0));
    assert!(body.contains("# TYPE wavecast_connections gauge"));
    let _a = RawClient::connect(server.addr(), "/ws");
    let _b = RawClient::connect(server.addr(), "/ws");
    // The connections are registered by the time the 101 is read, but give
    // the shards a bounded moment anyway.
    let mut seen = None;
    for _ in 0..50 {
        seen = metric(&get(()), "wavecast_connections");
        if seen == Some(2.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, Some(2.0));
    let body = get(());
    assert!(metric(&body, "wavecast_resident_memory_bytes").is_some_and(|v| v > 0.0));
}
