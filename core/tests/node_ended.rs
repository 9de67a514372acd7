//! How a finished connection ended (`Node::poll_ended`): the close code
//! that describes the end and who ended it, for the driver's logs and
//! counts.

mod common;

use wavecast_core::close::CloseCode;
use wavecast_core::frame::OpCode;
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{close, Encoding};
use wavecast_core::Timestamp;

/// Writes everything the node queued (as a driver whose socket takes it
/// all would).
fn write_all(node: &mut Node, now: Timestamp) {
    while let Some(id) = node.poll_transmit() {
        let n = node.queue(id).map_or(0, |q| q.len());
        node.handle_written(now, id, n);
    }
}

fn close_frame(code: u16) -> Vec<u8> {
    common::masked(true, OpCode::Close, &code.to_be_bytes(), [9, 8, 7, 6]).to_vec()
}

fn open(node: &mut Node) -> ConnId {
    node.handle_connect(Timestamp::ZERO, Endpoint::PubSub(Encoding::Json), b"")
}

#[test]
fn each_end_is_reported_with_its_code_and_cause() {
    let now = Timestamp::ZERO;
    let mut node = Node::new(NodeConfig::default());
    // The client closes with 1000.
    let a = open(&mut node);
    node.handle_read(now, a, &close_frame(1000));
    write_all(&mut node, now);
    let (id, ended) = node.poll_ended().expect("a ended");
    assert_eq!((id, ended.code), (a, CloseCode::NORMAL));
    assert_eq!(ended.cause, "closed by the client");
    // The transport ends without a close handshake.
    let b = open(&mut node);
    node.handle_eof(now, b);
    write_all(&mut node, now);
    let (id, ended) = node.poll_ended().expect("b ended");
    assert_eq!((id, ended.code), (b, CloseCode::ABNORMAL));
    // The server closes (an API disconnect) and the client answers.
    let c = open(&mut node);
    node.close(
        now,
        c,
        close::DISCONNECTED,
        close::reason(close::DISCONNECTED),
    );
    write_all(&mut node, now);
    assert_eq!(node.poll_ended(), None, "waits for the client's close");
    node.handle_read(now, c, &close_frame(close::DISCONNECTED.0));
    write_all(&mut node, now);
    let (id, ended) = node.poll_ended().expect("c ended");
    assert_eq!((id, ended.code), (c, close::DISCONNECTED));
    assert_eq!(ended.cause, "closed by the server");
    assert_eq!(node.poll_ended(), None);
    assert_eq!(node.connections(), 0);
}

#[test]
fn the_end_names_the_endpoint_and_the_user() {
    let now = Timestamp::ZERO;
    let mut node = Node::new(NodeConfig::default());
    let a = node.handle_connect(now, Endpoint::Echo, b"");
    node.handle_eof(now, a);
    write_all(&mut node, now);
    let (_, ended) = node.poll_ended().expect("a ended");
    assert_eq!(ended.endpoint, Endpoint::Echo);
    // On an open server a connection is anonymous: no user.
    let b = open(&mut node);
    node.handle_eof(now, b);
    write_all(&mut node, now);
    let (_, ended) = node.poll_ended().expect("b ended");
    assert_eq!(ended.endpoint, Endpoint::PubSub(Encoding::Json));
    assert_eq!(ended.user, None);
}

#[test]
fn the_most_queued_connections_come_most_first() {
    let now = Timestamp::ZERO;
    let mut node = Node::new(NodeConfig::default());
    let (a, b, c) = (open(&mut node), open(&mut node), open(&mut node));
    // Close frames of different sizes, left unwritten.
    node.close(now, a, CloseCode(4000), "x");
    node.close(now, b, CloseCode(4000), "a longer reason");
    let _ = c; // nothing queued: not listed
    let qa = node.queue(a).map_or(0, |q| q.len());
    let qb = node.queue(b).map_or(0, |q| q.len());
    assert!(qb > qa && qa > 0);
    assert_eq!(node.most_queued(5), [(b, qb), (a, qa)]);
    assert_eq!(node.most_queued(1), [(b, qb)]);
    assert_eq!(node.most_queued(0), []);
}
