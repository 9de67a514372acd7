//! The pub/sub wire protocol (v1) against docs/PROTOCOL.md: every command
//! decodes from JSON and MessagePack, every reply and push encodes to the
//! documented JSON and to MessagePack with the same structure, and each kind
//! of bad input lands in the right error class.
//!
//! Long (about eighty short tests) because it follows docs/PROTOCOL.md
//! section by section, one test per documented rule; each stands alone.

mod common;

use serde_json::{json, Value};
use wavecast_core::close::CloseCode;
use wavecast_core::frame::OpCode;
use wavecast_core::protocol::{
    close, decode_request, encode_pub, encode_push, encode_reply, encode_request, namespace,
    unsubscribe_code, validate_channel, ChannelError, ClientInfo, Command, Encoding, ErrorCode,
    ErrorReply, MalformedFrame, Payload, PayloadError, ProtocolError, Publication, Push, Recovery,
    Reply, Request, MAX_CHANNEL_LEN, MAX_DATA_DEPTH,
};

use common::pos;

// ---------------------------------------------------------------------------
// helpers

fn msgpack(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("serde_json::Value encodes to MessagePack")
}

/// Decodes `value` as a command in both encodings; both must agree.
fn decode_both(value: Value) -> Result<Request, ProtocolError> {
    let json = decode_request(Encoding::Json, value.to_string().as_bytes());
    let mp = decode_request(Encoding::MsgPack, &msgpack(&value));
    match (&json, &mp) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.id, b.id);
            assert_eq!(same_data(&a.command), same_data(&b.command), "{value}");
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.close_code(), b.close_code(), "{value}: {a} / {b}");
            assert_eq!(
                a.error_reply().map(|(id, r)| (id, r.code)),
                b.error_reply().map(|(id, r)| (id, r.code)),
                "{value}: {a} / {b}"
            );
        }
        _ => panic!("encodings disagree on {value}: {json:?} / {mp:?}"),
    }
    json
}

/// A command with its data replaced by the data's JSON value, so that
/// commands decoded from both encodings compare equal (MessagePack data is
/// re-serialised, JSON data is kept verbatim).
fn same_data(command: &Command) -> (Command, Option<Value>) {
    match command {
        Command::Publish { channel, data } => (
            Command::Publish {
                channel: channel.clone(),
                data: Payload::null(),
            },
            Some(data_value(data)),
        ),
        other => (other.clone(), None),
    }
}

fn data_value(data: &Payload) -> Value {
    serde_json::from_slice(data.as_json()).expect("payload is JSON")
}

fn payload(value: Value) -> Payload {
    Payload::from_json(value.to_string().as_bytes()).expect("valid JSON")
}

/// Encodes with both encodings and checks both against the documented JSON.
fn assert_encodes(encode: impl Fn(Encoding) -> bytes::Bytes, expected: Value) {
    let json = encode(Encoding::Json);
    let as_json: Value = serde_json::from_slice(&json).expect("JSON output parses");
    assert_eq!(as_json, expected, "JSON encoding");
    let mp = encode(Encoding::MsgPack);
    // Decoding into a serde_json::Value also checks that every map key is a
    // string, as the MessagePack mapping requires.
    let as_mp: Value = rmp_serde::from_slice(&mp).expect("MessagePack output decodes");
    assert_eq!(as_mp, expected, "MessagePack encoding");
}

fn malformed(result: Result<Request, ProtocolError>) -> MalformedFrame {
    match result {
        Err(ProtocolError::Malformed(m)) => m,
        other => panic!("expected a malformed-frame error, got {other:?}"),
    }
}

fn command_error(result: Result<Request, ProtocolError>) -> (u64, ErrorCode) {
    match result {
        Err(ref e @ ProtocolError::Command { id, ref reply }) => {
            assert_eq!(e.close_code(), None, "command errors keep the connection");
            (id, reply.code)
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// commands

#[test]
fn subscribe_decodes_in_both_encodings() {
    let r = decode_both(json!({"id": 1, "subscribe": {"channel": "news"}})).unwrap();
    assert_eq!(r.id, 1);
    assert_eq!(
        r.command,
        Command::Subscribe {
            channel: "news".into(),
            recover: None,
            token: None,
        }
    );

    let r = decode_both(
        json!({"id": 1, "subscribe": {"channel": "news", "recover": {"epoch": "E", "offset": 41}}}),
    )
    .unwrap();
    assert_eq!(
        r.command,
        Command::Subscribe {
            channel: "news".into(),
            recover: Some(pos("E", 41)),
            token: None,
        }
    );
}

#[test]
fn unsubscribe_and_presence_decode_in_both_encodings() {
    let r = decode_both(json!({"id": 2, "unsubscribe": {"channel": "news"}})).unwrap();
    assert_eq!(r.id, 2);
    assert_eq!(
        r.command,
        Command::Unsubscribe {
            channel: "news".into()
        }
    );
    let r = decode_both(json!({"id": 4, "presence": {"channel": "chat:room"}})).unwrap();
    assert_eq!(r.id, 4);
    assert_eq!(
        r.command,
        Command::Presence {
            channel: "chat:room".into()
        }
    );
}

#[test]
fn publish_decodes_any_json_data_in_both_encodings() {
    for data in [
        json!(null),
        json!(true),
        json!(0),
        json!(-17),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!("text with \"quotes\", \\ and \u{1} and é"),
        json!([1, "two", [3.25], {"four": null}]),
        json!({"nested": {"deeply": [{"x": 1}]}, "": ""}),
    ] {
        let r = decode_both(json!({"id": 3, "publish": {"channel": "news", "data": data}}))
            .unwrap_or_else(|e| panic!("{data}: {e}"));
        assert_eq!(r.id, 3);
        match r.command {
            Command::Publish { channel, data: got } => {
                assert_eq!(channel, "news");
                assert_eq!(data_value(&got), data);
            }
            other => panic!("expected publish, got {other:?}"),
        }
    }
}

#[test]
fn json_publish_keeps_the_data_bytes_verbatim() {
    let frame =
        br#"{"id":3,"publish":{"channel":"news","data":{"b": 1.50,  "a":[1e2, "\u00e9"]}}}"#;
    let r = decode_request(Encoding::Json, frame).unwrap();
    match r.command {
        Command::Publish { data, .. } => {
            assert_eq!(data.as_json(), br#"{"b": 1.50,  "a":[1e2, "\u00e9"]}"#)
        }
        other => panic!("expected publish, got {other:?}"),
    }
}

#[test]
fn history_decodes_in_both_encodings() {
    let r = decode_both(json!({"id": 5, "history": {"channel": "news"}})).unwrap();
    assert_eq!(
        r.command,
        Command::History {
            channel: "news".into(),
            since: None,
            limit: None,
            reverse: false,
        }
    );
    let r = decode_both(json!({"id": 5, "history": {
        "channel": "news", "since": {"epoch": "E", "offset": 10}, "limit": 100}}))
    .unwrap();
    assert_eq!(r.id, 5);
    assert_eq!(
        r.command,
        Command::History {
            channel: "news".into(),
            since: Some(pos("E", 10)),
            limit: Some(100),
            reverse: false,
        }
    );
    let r =
        decode_both(json!({"id": 6, "history": {"channel": "news", "limit": 50, "reverse": true}}))
            .unwrap();
    assert_eq!(
        r.command,
        Command::History {
            channel: "news".into(),
            since: None,
            limit: Some(50),
            reverse: true,
        }
    );
    let e = decode_both(json!({"id": 7, "history": {"channel": "news", "reverse": "yes"}}))
        .unwrap_err();
    assert_eq!(
        e.error_reply().map(|(_, r)| r.code),
        Some(ErrorCode::BadRequest)
    );
}

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let r = decode_both(json!({
        "id": 9,
        "v": 2,
        "meta": {"anything": [1, 2, {"x": null}]},
        "subscribe": {"channel": "news", "flags": 7,
                      "recover": {"epoch": "E", "offset": 3, "extra": "x"}}
    }))
    .unwrap();
    assert_eq!(
        r.command,
        Command::Subscribe {
            channel: "news".into(),
            recover: Some(pos("E", 3)),
            token: None,
        }
    );
    let r = decode_both(json!({"id": 9, "history": {"channel": "n", "future": true}})).unwrap();
    assert_eq!(r.command.name(), "history");
}

#[test]
fn ids_up_to_u64_max_are_accepted() {
    let r = decode_both(json!({"id": u64::MAX, "presence": {"channel": "a"}})).unwrap();
    assert_eq!(r.id, u64::MAX);
}

#[test]
fn null_command_fields_count_as_absent() {
    let r = decode_both(json!({"id": 1, "publish": null, "presence": {"channel": "a"}})).unwrap();
    assert_eq!(r.command.name(), "presence");
}

#[test]
fn encode_request_round_trips_every_command() {
    let commands = [
        Command::Subscribe {
            channel: "news".into(),
            recover: None,
            token: None,
        },
        Command::Subscribe {
            channel: "ns:a\"b".into(),
            recover: Some(pos("ep\noch", u64::MAX)),
            token: None,
        },
        Command::Unsubscribe {
            channel: "news".into(),
        },
        Command::Publish {
            channel: "news".into(),
            data: payload(json!({"k": [1, -2, 3.5, "s", null, false]})),
        },
        Command::Presence {
            channel: "x".into(),
        },
        Command::History {
            channel: "news".into(),
            since: Some(pos("E", 0)),
            limit: Some(u32::MAX),
            reverse: false,
        },
        Command::History {
            channel: "news".into(),
            since: None,
            limit: None,
            reverse: true,
        },
    ];
    for (i, command) in commands.into_iter().enumerate() {
        let request = Request {
            id: i as u64 + 1,
            command,
        };
        // JSON keeps data bytes verbatim, so the request comes back equal.
        let json = encode_request(Encoding::Json, &request);
        assert_eq!(decode_request(Encoding::Json, &json).unwrap(), request);
        // MessagePack re-serialises data: equal as JSON values.
        let mp = encode_request(Encoding::MsgPack, &request);
        let back = decode_request(Encoding::MsgPack, &mp).unwrap();
        assert_eq!(back.id, request.id);
        assert_eq!(same_data(&back.command), same_data(&request.command));
        // And the MessagePack form has the same structure as the JSON form.
        let json_value: Value = serde_json::from_slice(&json).unwrap();
        let mp_value: Value = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(json_value, mp_value);
    }
}

// ---------------------------------------------------------------------------
// bad commands: class (a), the frame cannot be trusted -> close 4500

#[test]
fn untrusted_json_frames_close_the_connection() {
    type Check = fn(&MalformedFrame) -> bool;
    let cases: &[(&[u8], Check)] = &[
        (b"", |m| matches!(m, MalformedFrame::Syntax { .. })),
        (b"   ", |m| matches!(m, MalformedFrame::Syntax { .. })),
        (b"not json", |m| matches!(m, MalformedFrame::Syntax { .. })),
        (b"{\"id\":1,", |m| {
            matches!(m, MalformedFrame::Syntax { .. })
        }),
        (b"{\"id\":1}{}", |m| {
            matches!(m, MalformedFrame::Syntax { .. })
        }),
        (b"\xff\xfe", |m| matches!(m, MalformedFrame::Syntax { .. })),
        (b"[1, {\"subscribe\": {\"channel\": \"a\"}}]", |m| {
            *m == MalformedFrame::NotAnObject
        }),
        (b"42", |m| *m == MalformedFrame::NotAnObject),
        (b"\"id\"", |m| *m == MalformedFrame::NotAnObject),
        (b"{\"subscribe\":{\"channel\":\"a\"}}", |m| {
            *m == MalformedFrame::MissingId
        }),
        (b"{\"id\":null,\"subscribe\":{\"channel\":\"a\"}}", |m| {
            *m == MalformedFrame::MissingId
        }),
        (b"{\"id\":0,\"subscribe\":{\"channel\":\"a\"}}", |m| {
            *m == MalformedFrame::ZeroId
        }),
        (b"{\"id\":\"1\",\"subscribe\":{\"channel\":\"a\"}}", |m| {
            matches!(m, MalformedFrame::Syntax { .. })
        }),
        (b"{\"id\":-1,\"subscribe\":{\"channel\":\"a\"}}", |m| {
            matches!(m, MalformedFrame::Syntax { .. })
        }),
        (b"{\"id\":1.5,\"subscribe\":{\"channel\":\"a\"}}", |m| {
            matches!(m, MalformedFrame::Syntax { .. })
        }),
        (
            b"{\"id\":18446744073709551616,\"presence\":{\"channel\":\"a\"}}",
            |m| matches!(m, MalformedFrame::Syntax { .. }),
        ),
        (
            b"{\"id\":1,\"id\":2,\"presence\":{\"channel\":\"a\"}}",
            |m| matches!(m, MalformedFrame::Syntax { .. }),
        ),
    ];
    for (bytes, check) in cases {
        let result = decode_request(Encoding::Json, bytes);
        let err = result.clone().unwrap_err();
        assert_eq!(
            err.close_code(),
            Some(close::BAD_COMMAND),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        assert!(err.error_reply().is_none());
        let m = malformed(result);
        assert!(check(&m), "{}: got {m:?}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn untrusted_msgpack_frames_close_the_connection() {
    let good = msgpack(&json!({"id": 1, "presence": {"channel": "a"}}));
    let mut trailing = good.clone();
    trailing.push(0xc0);
    let truncated = &good[..good.len() - 1];
    let cases: Vec<(Vec<u8>, MalformedFrame)> = vec![
        (
            msgpack(&json!([1, {"presence": {"channel": "a"}}])),
            MalformedFrame::NotAnObject,
        ),
        (msgpack(&json!("text")), MalformedFrame::NotAnObject),
        (
            msgpack(&json!({"presence": {"channel": "a"}})),
            MalformedFrame::MissingId,
        ),
        (
            msgpack(&json!({"id": 0, "presence": {"channel": "a"}})),
            MalformedFrame::ZeroId,
        ),
    ];
    for (bytes, expected) in cases {
        let err = decode_request(Encoding::MsgPack, &bytes).unwrap_err();
        assert_eq!(err.close_code(), Some(close::BAD_COMMAND));
        assert_eq!(err, ProtocolError::Malformed(expected));
    }
    for bytes in [
        Vec::new(),
        trailing,
        truncated.to_vec(),
        vec![0xc1],             // never-used marker
        vec![0x81, 0xc1, 0x01], // map whose key is the never-used marker
        msgpack(&json!({"id": -3, "presence": {"channel": "a"}})),
        msgpack(&json!({"id": "7", "presence": {"channel": "a"}})),
        b"{\"id\":1,\"presence\":{\"channel\":\"a\"}}".to_vec(), // JSON on a msgpack connection
    ] {
        let m = malformed(decode_request(Encoding::MsgPack, &bytes));
        assert!(
            matches!(
                m,
                MalformedFrame::Syntax {
                    encoding: Encoding::MsgPack,
                    ..
                } | MalformedFrame::NotAnObject
            ),
            "{bytes:x?}: {m:?}"
        );
    }
}

#[test]
fn msgpack_on_a_json_connection_is_untrusted() {
    let bytes = msgpack(&json!({"id": 1, "presence": {"channel": "a"}}));
    let m = malformed(decode_request(Encoding::Json, &bytes));
    assert!(matches!(m, MalformedFrame::Syntax { .. }), "{m:?}");
}

// ---------------------------------------------------------------------------
// bad commands: class (b), usable id -> error reply with that id

#[test]
fn unknown_command_gets_an_error_reply() {
    assert_eq!(
        command_error(decode_both(json!({"id": 7, "rpc": {"method": "x"}}))),
        (7, ErrorCode::UnknownCommand)
    );
    assert_eq!(
        command_error(decode_both(json!({"id": 8}))),
        (8, ErrorCode::UnknownCommand)
    );
}

#[test]
fn malformed_commands_get_bad_request_replies() {
    for value in [
        json!({"id": 11, "subscribe": {}}),
        json!({"id": 11, "subscribe": {"channel": 5}}),
        json!({"id": 11, "subscribe": ["news"]}),
        json!({"id": 11, "subscribe": "news"}),
        json!({"id": 11, "subscribe": {"channel": "a", "recover": {"epoch": "E"}}}),
        json!({"id": 11, "subscribe": {"channel": "a", "recover": {"epoch": 1, "offset": 2}}}),
        json!({"id": 11, "subscribe": {"channel": "a", "recover": ["E", 2]}}),
        json!({"id": 11, "subscribe": {"channel": "a", "recover": {"epoch": "E", "offset": -1}}}),
        json!({"id": 11, "unsubscribe": {"chan": "a"}}),
        json!({"id": 11, "publish": {"channel": "a"}}),
        json!({"id": 11, "presence": {}}),
        json!({"id": 11, "history": {"channel": "a", "limit": 4294967296u64}}),
        json!({"id": 11, "history": {"channel": "a", "limit": -1}}),
        json!({"id": 11, "history": {"channel": "a", "since": 10}}),
        json!({"id": 11, "subscribe": {"channel": "a"}, "unsubscribe": {"channel": "a"}}),
    ] {
        assert_eq!(
            command_error(decode_both(value.clone())),
            (11, ErrorCode::BadRequest),
            "{value}"
        );
    }
}

#[test]
fn bad_channel_names_get_error_109() {
    let long = "x".repeat(MAX_CHANNEL_LEN + 1);
    for channel in [
        "",
        "a b",
        "tab\there",
        "nl\n",
        "\u{7f}",
        ":x",
        "x:",
        long.as_str(),
    ] {
        assert_eq!(
            command_error(decode_both(
                json!({"id": 12, "subscribe": {"channel": channel}})
            )),
            (12, ErrorCode::BadChannel),
            "{channel:?}"
        );
        assert_eq!(ErrorCode::BadChannel.code(), 109);
    }
}

#[test]
fn json_data_that_is_invalid_inside_a_valid_frame_gets_an_error_reply() {
    // serde_json's skipping parser accepts these; the payload check does not.
    for frame in [
        r#"{"id":13,"publish":{"channel":"a","data":"\ud800"}}"#,
        r#"{"id":13,"publish":{"channel":"a","data":{"\udc00":1}}}"#,
        r#"{"id":13,"publish":{"channel":"a","data":1e400}}"#,
    ] {
        assert_eq!(
            command_error(decode_request(Encoding::Json, frame.as_bytes())),
            (13, ErrorCode::BadRequest),
            "{frame}"
        );
    }
    let deep = format!(
        r#"{{"id":13,"publish":{{"channel":"a","data":{}{}}}}}"#,
        "[".repeat(MAX_DATA_DEPTH + 1),
        "]".repeat(MAX_DATA_DEPTH + 1)
    );
    assert_eq!(
        command_error(decode_request(Encoding::Json, deep.as_bytes())),
        (13, ErrorCode::BadRequest)
    );
    let ok = format!(
        r#"{{"id":13,"publish":{{"channel":"a","data":{}{}}}}}"#,
        "[".repeat(MAX_DATA_DEPTH),
        "]".repeat(MAX_DATA_DEPTH)
    );
    assert!(decode_request(Encoding::Json, ok.as_bytes()).is_ok());
}

/// MessagePack values with no JSON equivalent, inside a frame whose id is
/// readable, get an error reply.
#[test]
fn msgpack_data_without_a_json_equivalent_gets_an_error_reply() {
    // {"id": 14, "publish": {"channel": "a", "data": X}} with X spliced in.
    let frame = |data: &[u8]| {
        let mut v = vec![0x82, 0xa2, b'i', b'd', 14, 0xa7];
        v.extend_from_slice(b"publish");
        v.extend_from_slice(&[0x82, 0xa7]);
        v.extend_from_slice(b"channel");
        v.extend_from_slice(&[0xa1, b'a', 0xa4]);
        v.extend_from_slice(b"data");
        v.extend_from_slice(data);
        v
    };
    // Sanity: the frame builder makes valid commands.
    assert!(decode_request(Encoding::MsgPack, &frame(&[0x2a])).is_ok());
    for data in [
        vec![0xc4, 0x02, 0x01, 0x02],                                // bin 8
        vec![0xd4, 0x01, 0x00],                                      // fixext 1
        vec![0x81, 0x01, 0x02],                                      // {1: 2}
        [vec![0xcb], f64::NAN.to_be_bytes().to_vec()].concat(),      // NaN
        [vec![0xcb], f64::INFINITY.to_be_bytes().to_vec()].concat(), // inf
        vec![0xa2, 0xff, 0xfe],                                      // str, not UTF-8
    ] {
        assert_eq!(
            command_error(decode_request(Encoding::MsgPack, &frame(&data))),
            (14, ErrorCode::BadRequest),
            "{data:x?}"
        );
    }
}

// ---------------------------------------------------------------------------
// replies

#[test]
fn subscribe_replies_encode_as_documented() {
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                1,
                &Reply::Subscribe {
                    epoch: "E".into(),
                    offset: 45,
                    recovery: None,
                },
            )
        },
        json!({"id": 1, "subscribe": {"epoch": "E", "offset": 45}}),
    );
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                1,
                &Reply::Subscribe {
                    epoch: "E".into(),
                    offset: 45,
                    recovery: Some(Recovery {
                        recovered: true,
                        publications: vec![
                            Publication {
                                offset: 42,
                                data: payload(json!({"a": 1})),
                                info: None,
                            },
                            Publication {
                                offset: 43,
                                data: payload(json!("x")),
                                info: None,
                            },
                        ],
                    }),
                },
            )
        },
        json!({"id": 1, "subscribe": {"epoch": "E", "offset": 45, "recovered": true,
            "publications": [{"offset": 42, "data": {"a": 1}}, {"offset": 43, "data": "x"}]}}),
    );
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                1,
                &Reply::Subscribe {
                    epoch: "F".into(),
                    offset: 0,
                    recovery: Some(Recovery {
                        recovered: false,
                        publications: vec![],
                    }),
                },
            )
        },
        json!({"id": 1, "subscribe": {"epoch": "F", "offset": 0, "recovered": false,
            "publications": []}}),
    );
}

#[test]
fn other_replies_encode_as_documented() {
    assert_encodes(
        |enc| encode_reply(enc, 2, &Reply::Unsubscribe),
        json!({"id": 2, "unsubscribe": {}}),
    );
    assert_encodes(
        |enc| encode_reply(enc, 3, &Reply::Publish { offset: 46 }),
        json!({"id": 3, "publish": {"offset": 46}}),
    );
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                4,
                &Reply::Presence {
                    clients: vec![
                        ClientInfo {
                            client: "c1".into(),
                            user: "alice".into(),
                            conn_info: None,
                            chan_info: None,
                        },
                        ClientInfo {
                            client: "c2".into(),
                            user: "".into(),
                            conn_info: None,
                            chan_info: None,
                        },
                    ],
                },
            )
        },
        json!({"id": 4, "presence": {"clients": {
            "c1": {"client": "c1", "user": "alice"},
            "c2": {"client": "c2", "user": ""}}}}),
    );
    assert_encodes(
        |enc| encode_reply(enc, 4, &Reply::Presence { clients: vec![] }),
        json!({"id": 4, "presence": {"clients": {}}}),
    );
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                5,
                &Reply::History {
                    epoch: "E".into(),
                    offset: 45,
                    publications: vec![Publication {
                        offset: 44,
                        data: payload(json!([1, 2.5, null])),
                        info: None,
                    }],
                },
            )
        },
        json!({"id": 5, "history": {"epoch": "E", "offset": 45,
            "publications": [{"offset": 44, "data": [1, 2.5, null]}]}}),
    );
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                u64::MAX,
                &Reply::Error(ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    "no \"publish\"\n",
                )),
            )
        },
        json!({"id": u64::MAX, "error": {"code": 104, "message": "no \"publish\"\n"}}),
    );
}

#[test]
fn protocol_errors_turn_into_the_reply_they_describe() {
    let err = decode_request(Encoding::Json, br#"{"id":21,"foo":{}}"#).unwrap_err();
    let (id, reply) = err.error_reply().unwrap();
    assert_encodes(
        |enc| encode_reply(enc, id, &Reply::Error(reply.clone())),
        json!({"id": 21, "error": {"code": 102, "message": reply.message}}),
    );
}

// ---------------------------------------------------------------------------
// pushes

#[test]
fn pushes_encode_as_documented() {
    let info = ClientInfo {
        client: "C".into(),
        user: "U".into(),
        conn_info: None,
        chan_info: None,
    };
    assert_encodes(
        |enc| {
            encode_push(
                enc,
                &Push::Pub {
                    channel: "news".into(),
                    publication: Publication {
                        offset: 46,
                        data: payload(json!({"text": "hi", "n": [1, -1, 0.5]})),
                        info: None,
                    },
                },
            )
        },
        json!({"push": {"channel": "news", "pub": {"offset": 46,
            "data": {"text": "hi", "n": [1, -1, 0.5]}}}}),
    );
    assert_encodes(
        |enc| {
            encode_push(
                enc,
                &Push::Join {
                    channel: "news".into(),
                    info: info.clone(),
                },
            )
        },
        json!({"push": {"channel": "news", "join": {"client": "C", "user": "U"}}}),
    );
    assert_encodes(
        |enc| {
            encode_push(
                enc,
                &Push::Leave {
                    channel: "news".into(),
                    info: info.clone(),
                },
            )
        },
        json!({"push": {"channel": "news", "leave": {"client": "C", "user": "U"}}}),
    );
    assert_encodes(
        |enc| {
            encode_push(
                enc,
                &Push::Unsubscribe {
                    channel: "news".into(),
                    code: unsubscribe_code::INSUFFICIENT_STATE,
                    reason: "insufficient state".into(),
                },
            )
        },
        json!({"push": {"channel": "news", "unsubscribe": {"code": 2500,
            "reason": "insufficient state"}}}),
    );
}

#[test]
fn client_infos_carry_conn_info_and_chan_info_only_when_present() {
    let ann = ClientInfo {
        client: "C".into(),
        user: "U".into(),
        conn_info: Some(payload(json!({"name": "Ann", "n": [1, 2.5]}))),
        chan_info: Some(payload(json!({"role": "mod"}))),
    };
    let bob = ClientInfo {
        client: "D".into(),
        user: "bob".into(),
        conn_info: None,
        chan_info: Some(payload(json!(null))),
    };
    let ann_json = json!({"client": "C", "user": "U",
        "conn_info": {"name": "Ann", "n": [1, 2.5]}, "chan_info": {"role": "mod"}});
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                4,
                &Reply::Presence {
                    clients: vec![ann.clone(), bob.clone()],
                },
            )
        },
        json!({"id": 4, "presence": {"clients": {
            "C": ann_json,
            "D": {"client": "D", "user": "bob", "chan_info": null}}}}),
    );
    assert_encodes(
        |enc| {
            encode_push(
                enc,
                &Push::Join {
                    channel: "room".into(),
                    info: ann.clone(),
                },
            )
        },
        json!({"push": {"channel": "room", "join": ann_json}}),
    );
    assert_encodes(
        |enc| {
            encode_push(
                enc,
                &Push::Leave {
                    channel: "room".into(),
                    info: bob.clone(),
                },
            )
        },
        json!({"push": {"channel": "room", "leave": {"client": "D", "user": "bob",
            "chan_info": null}}}),
    );
    let publication = Publication {
        offset: 9,
        data: payload(json!("hi")),
        info: Some(Box::new(ann.clone())),
    };
    assert_encodes(
        |enc| encode_pub(enc, "room", &publication),
        json!({"push": {"channel": "room", "pub": {"offset": 9, "data": "hi",
            "info": ann_json}}}),
    );
    assert_encodes(
        |enc| {
            encode_reply(
                enc,
                5,
                &Reply::History {
                    epoch: "E".into(),
                    offset: 9,
                    publications: vec![publication.clone()],
                },
            )
        },
        json!({"id": 5, "history": {"epoch": "E", "offset": 9,
            "publications": [{"offset": 9, "data": "hi", "info": ann_json}]}}),
    );
}

#[test]
fn infos_are_spliced_verbatim_and_their_absence_changes_no_byte() {
    // Without infos: the bytes servers sent before infos existed.
    let plain = ClientInfo {
        client: "C".into(),
        user: "U".into(),
        conn_info: None,
        chan_info: None,
    };
    let join = Push::Join {
        channel: "room".into(),
        info: plain.clone(),
    };
    assert_eq!(
        &encode_push(Encoding::Json, &join)[..],
        br#"{"push":{"channel":"room","join":{"client":"C","user":"U"}}}"#
    );
    let publication = |info: ClientInfo| Publication {
        offset: 7,
        data: payload(json!(1)),
        info: Some(Box::new(info)),
    };
    assert_eq!(
        &encode_pub(Encoding::Json, "room", &publication(plain.clone()))[..],
        br#"{"push":{"channel":"room","pub":{"offset":7,"data":1,"info":{"client":"C","user":"U"}}}}"#
    );
    // With them: their JSON text as given, after client and user.
    let raw: &[u8] = br#"{"z": 1.50 , "a":[1e2,"\u00e9"]}"#;
    let with = ClientInfo {
        conn_info: Some(Payload::from_json(raw).unwrap()),
        chan_info: Some(Payload::from_json(b"[true]").unwrap()),
        ..plain
    };
    let mut expected =
        br#"{"push":{"channel":"room","pub":{"offset":7,"data":1,"info":{"client":"C","user":"U","conn_info":"#
            .to_vec();
    expected.extend_from_slice(raw);
    expected.extend_from_slice(br#","chan_info":[true]}}}}"#);
    let frame = encode_pub(Encoding::Json, "room", &publication(with.clone()));
    assert_eq!(&frame[..], &expected[..]);
    let mut expected =
        br#"{"push":{"channel":"room","join":{"client":"C","user":"U","conn_info":"#.to_vec();
    expected.extend_from_slice(raw);
    expected.extend_from_slice(br#","chan_info":[true]}}}"#);
    let join = Push::Join {
        channel: "room".into(),
        info: with,
    };
    assert_eq!(&encode_push(Encoding::Json, &join)[..], &expected[..]);
}

#[test]
fn json_pub_push_splices_data_bytes_verbatim() {
    // Formatting a re-serialiser would change: spaces, key order, "1.50",
    // "1e2", an escaped "é".
    let raw: &[u8] = br#"{"z": 1.50 , "a":[1e2,"\u00e9"]}"#;
    let data = Payload::from_json(raw).unwrap();
    let publication = Publication {
        offset: 7,
        data,
        info: None,
    };
    let frame = encode_pub(Encoding::Json, "news", &publication);
    let mut expected = br#"{"push":{"channel":"news","pub":{"offset":7,"data":"#.to_vec();
    expected.extend_from_slice(raw);
    expected.extend_from_slice(b"}}}");
    assert_eq!(&frame[..], &expected[..]);
    // encode_push takes the same path.
    let push = Push::Pub {
        channel: "news".into(),
        publication,
    };
    assert_eq!(encode_push(Encoding::Json, &push), frame);
}

#[test]
fn channel_and_strings_with_special_characters_are_escaped() {
    let reason =
        "quote \" backslash \\ nul \u{0} bell \u{7} unit-sep \u{1f} del \u{7f} \u{2028} é 🎉";
    assert_encodes(
        |enc| {
            encode_push(
                enc,
                &Push::Unsubscribe {
                    channel: "chat:é🎉".into(),
                    code: unsubscribe_code::SERVER,
                    reason: reason.into(),
                },
            )
        },
        json!({"push": {"channel": "chat:é🎉", "unsubscribe": {"code": 2000, "reason": reason}}}),
    );
}

#[test]
fn msgpack_strings_and_containers_of_every_length_class_decode() {
    // Lengths straddling the fixstr/str8/str16 and fix/16-bit container
    // boundaries, so every header form of the writer is exercised.
    for len in [0usize, 31, 32, 255, 256, 65535, 65536] {
        let s = "s".repeat(len);
        let items: Vec<u64> = (0..(len.min(70_000) as u64 % 20)).collect();
        let data = json!({"s": s, "items": items});
        assert_encodes(
            |enc| {
                encode_push(
                    enc,
                    &Push::Pub {
                        channel: "c".into(),
                        publication: Publication {
                            offset: len as u64,
                            data: payload(data.clone()),
                            info: None,
                        },
                    },
                )
            },
            json!({"push": {"channel": "c", "pub": {"offset": len, "data": data}}}),
        );
    }
    let many: Vec<u64> = (0..70_000).collect();
    let obj: serde_json::Map<String, Value> =
        (0..20).map(|i| (format!("k{i}"), json!(i))).collect();
    let data = json!({"many": many, "obj": obj});
    assert_eq!(
        data_value(&Payload::from_msgpack(&payload(data.clone()).to_msgpack()).unwrap()),
        data
    );
}

#[test]
fn msgpack_integers_of_every_width_survive_transcoding() {
    for n in [
        0i64,
        127,
        128,
        255,
        256,
        65535,
        65536,
        u32::MAX as i64,
        u32::MAX as i64 + 1,
        i64::MAX,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32768,
        -32769,
        i32::MIN as i64,
        i32::MIN as i64 - 1,
        i64::MIN,
    ] {
        let p = payload(json!(n));
        let back: Value = rmp_serde::from_slice(&p.to_msgpack()).unwrap();
        assert_eq!(back, json!(n));
        assert_eq!(
            data_value(&Payload::from_msgpack(&p.to_msgpack()).unwrap()),
            json!(n)
        );
    }
    let p = payload(json!(u64::MAX));
    assert_eq!(
        rmp_serde::from_slice::<Value>(&p.to_msgpack()).unwrap(),
        json!(u64::MAX)
    );
}

// ---------------------------------------------------------------------------
// payloads

#[test]
fn payload_from_json_validates_and_trims() {
    let p = Payload::from_json(b" \n {\"a\": [1, 2]}\t\r\n").unwrap();
    assert_eq!(p.as_json(), b"{\"a\": [1, 2]}");
    let b = Payload::from_json_bytes(bytes::Bytes::from_static(b" 7 ")).unwrap();
    assert_eq!(b.as_json(), b"7");
    for bad in [
        &b""[..],
        b"  ",
        b"{",
        b"{} {}",
        b"nul",
        b"NaN",
        b"1e400",
        b"\"\\ud800\"",
        b"\"\xff\"",
        b"[1,]",
        b"{'a': 1}",
    ] {
        assert!(
            matches!(Payload::from_json(bad), Err(PayloadError::Json(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn payload_depth_limit_is_the_same_in_both_encodings() {
    let nested = |depth: usize| {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    };
    let ok = nested(MAX_DATA_DEPTH);
    let too_deep = nested(MAX_DATA_DEPTH + 1);
    assert!(Payload::from_json(ok.to_string().as_bytes()).is_ok());
    assert!(Payload::from_msgpack(&msgpack(&ok)).is_ok());
    assert!(matches!(
        Payload::from_json(too_deep.to_string().as_bytes()),
        Err(PayloadError::Json(_))
    ));
    assert!(matches!(
        Payload::from_msgpack(&msgpack(&too_deep)),
        Err(PayloadError::MsgPack(_))
    ));
}

#[test]
fn payload_from_msgpack_refuses_what_json_cannot_express() {
    assert_eq!(
        Payload::from_msgpack(&[0x93, 0x01, 0xc0, 0xc3])
            .unwrap()
            .as_json(),
        b"[1,null,true]"
    );
    // Floats keep a fraction, so they stay floats on the way back.
    assert_eq!(
        Payload::from_msgpack(&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0])
            .unwrap()
            .as_json(),
        b"1.0"
    );
    let f32_half = [0xca, 0x3f, 0x00, 0x00, 0x00];
    assert_eq!(Payload::from_msgpack(&f32_half).unwrap().as_json(), b"0.5");
    for bad in [
        vec![],
        vec![0xc1],
        vec![0x92, 0x01],       // array of 2 with one element
        vec![0x01, 0x02],       // trailing bytes
        vec![0xc4, 0x01, 0x00], // bin
        vec![0xd5, 0x01, 0x00, 0x00],
        vec![0x81, 0xc3, 0x01], // {true: 1}
        [vec![0xcb], f64::NEG_INFINITY.to_be_bytes().to_vec()].concat(),
        [vec![0xca], f32::NAN.to_be_bytes().to_vec()].concat(),
    ] {
        assert!(
            matches!(Payload::from_msgpack(&bad), Err(PayloadError::MsgPack(_))),
            "{bad:x?}"
        );
    }
}

#[test]
fn payload_survives_json_to_msgpack_to_json() {
    let data = json!({"s": "é\"\\\n", "f": [0.1, -0.0, 1e300, 5e-324, 2.5e-8],
        "i": [0, -1, u64::MAX, i64::MIN], "o": {"": {}}, "a": [[], [null]], "b": false});
    let p = payload(data.clone());
    let back = Payload::from_msgpack(&p.to_msgpack()).unwrap();
    assert_eq!(data_value(&back), data);
}

#[test]
fn payload_clones_share_bytes() {
    let p = payload(json!({"big": "x".repeat(1000)}));
    let q = p.clone();
    assert_eq!(p.json_bytes().as_ptr(), q.json_bytes().as_ptr());
    assert_eq!(p.len(), q.len());
    assert!(!p.is_empty());
}

// ---------------------------------------------------------------------------
// encodings, channels, codes

#[test]
fn encodings_follow_the_subprotocol() {
    assert_eq!(Encoding::from_subprotocol(None), Some(Encoding::Json));
    assert_eq!(
        Encoding::from_subprotocol(Some("wavecast.json")),
        Some(Encoding::Json)
    );
    assert_eq!(
        Encoding::from_subprotocol(Some("wavecast.msgpack")),
        Some(Encoding::MsgPack)
    );
    assert_eq!(Encoding::from_subprotocol(Some("mqtt")), None);
    assert_eq!(Encoding::from_subprotocol(Some("")), None);
    for enc in Encoding::ALL {
        assert_eq!(
            Encoding::from_subprotocol(Some(enc.subprotocol())),
            Some(enc)
        );
        assert_eq!(Encoding::ALL[enc.index()], enc);
    }
    assert_eq!(Encoding::Json.frame_opcode(), OpCode::Text);
    assert_eq!(Encoding::MsgPack.frame_opcode(), OpCode::Binary);
}

#[test]
fn channel_names_and_namespaces() {
    for ok in [
        "news",
        "chat:room1",
        "chat:room:42",
        "a",
        "é🎉",
        &"x".repeat(MAX_CHANNEL_LEN),
    ] {
        assert_eq!(validate_channel(ok), Ok(()), "{ok:?}");
    }
    assert_eq!(validate_channel(""), Err(ChannelError::Empty));
    assert_eq!(
        validate_channel(&"é".repeat(128)),
        Err(ChannelError::TooLong(256))
    );
    assert_eq!(
        validate_channel("a b"),
        Err(ChannelError::ForbiddenChar(' '))
    );
    assert_eq!(
        validate_channel("a\u{a0}b"),
        Err(ChannelError::ForbiddenChar('\u{a0}'))
    );
    assert_eq!(
        validate_channel("a\u{0}"),
        Err(ChannelError::ForbiddenChar('\u{0}'))
    );
    assert_eq!(validate_channel(":a"), Err(ChannelError::EmptyNamespace));
    assert_eq!(validate_channel("a:"), Err(ChannelError::EmptyName));
    assert_eq!(namespace("news"), None);
    assert_eq!(namespace("chat:room1"), Some("chat"));
    assert_eq!(namespace("chat:room:42"), Some("chat"));
}

#[test]
fn close_codes_say_whether_to_reconnect() {
    for code in [
        close::SHUTDOWN,
        close::HEARTBEAT_TIMEOUT,
        close::SLOW_CONSUMER,
        close::INSUFFICIENT_STATE,
        close::DISCONNECTED,
    ] {
        assert!((4000..4500).contains(&code.0));
        assert!(close::should_reconnect(code), "{code}");
    }
    for code in [close::BAD_COMMAND, close::FORCE_DISCONNECT] {
        assert!((4500..5000).contains(&code.0));
        assert!(!close::should_reconnect(code), "{code}");
    }
    assert_eq!(
        (
            close::SHUTDOWN.0,
            close::HEARTBEAT_TIMEOUT.0,
            close::SLOW_CONSUMER.0
        ),
        (4000, 4001, 4002)
    );
    assert_eq!(
        (close::INSUFFICIENT_STATE.0, close::DISCONNECTED.0),
        (4003, 4004)
    );
    assert_eq!(
        (close::BAD_COMMAND.0, close::FORCE_DISCONNECT.0),
        (4500, 4501)
    );
    assert!(close::should_reconnect(CloseCode(4499)));
    assert!(!close::should_reconnect(CloseCode(4999)));
    assert!(close::should_reconnect(CloseCode(1001)));
    assert!(close::should_reconnect(CloseCode(1006)));
    assert!(!close::should_reconnect(CloseCode(1000)));
    assert!(!close::should_reconnect(CloseCode(1002)));
    for code in close::ALL {
        let reason = close::reason(code);
        assert!(!reason.is_empty() && reason.len() <= 123, "{code}");
    }
}

#[test]
fn unsubscribe_codes_say_whether_to_resubscribe() {
    assert!(unsubscribe_code::should_resubscribe(
        unsubscribe_code::INSUFFICIENT_STATE
    ));
    assert!(!unsubscribe_code::should_resubscribe(
        unsubscribe_code::SERVER
    ));
}

#[test]
fn error_codes_are_the_documented_numbers() {
    let numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(numbers, (100..=112).collect::<Vec<u16>>());
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        assert!((400..600).contains(&code.http_status()));
    }
    assert_eq!(ErrorCode::from_code(99), None);
    assert_eq!(ErrorCode::from_code(113), None);
    assert_eq!(ErrorCode::TokenExpired.code(), 111);
    assert_eq!(ErrorCode::Unauthorized.code(), 112);
    assert_eq!(ErrorCode::Internal.http_status(), 500);
    assert_eq!(ErrorCode::BadRequest.http_status(), 400);
}

// ---------------------------------------------------------------------------
// docs/PROTOCOL.md stays true

const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

/// Every one-line command example in docs/PROTOCOL.md decodes, in JSON and
/// (converted) in MessagePack.
#[test]
fn command_examples_in_the_docs_decode() {
    let mut n = 0;
    for line in PROTOCOL_MD.lines() {
        let line = line.trim().trim_start_matches("-> ");
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let is_command = value.get("id").is_some()
            && (["subscribe", "unsubscribe", "publish", "presence", "history"]
                .iter()
                .any(|c| {
                    value
                        .get(c)
                        .is_some_and(|body| body.get("channel").is_some())
                })
                || ["connect", "refresh"].iter().any(|c| {
                    value
                        .get(c)
                        .is_some_and(|body| body.get("token").is_some() || body == &json!({}))
                }));
        if is_command {
            decode_both(value).unwrap_or_else(|e| panic!("{line}: {e}"));
            n += 1;
        }
    }
    assert!(n >= 11, "found only {n} command examples");
}

#[test]
fn msgpack_example_in_the_docs_decodes() {
    let bytes = [
        0x82, 0xa2, 0x69, 0x64, 0x01, 0xa9, 0x73, 0x75, 0x62, 0x73, 0x63, 0x72, 0x69, 0x62, 0x65,
        0x81, 0xa7, 0x63, 0x68, 0x61, 0x6e, 0x6e, 0x65, 0x6c, 0xa4, 0x6e, 0x65, 0x77, 0x73,
    ];
    assert!(PROTOCOL_MD.contains("a9 73 75 62 73 63 72 69 62 65"));
    let request = decode_request(Encoding::MsgPack, &bytes).unwrap();
    assert_eq!(request.id, 1);
    assert_eq!(
        request.command,
        Command::Subscribe {
            channel: "news".into(),
            recover: None,
            token: None,
        }
    );
}

#[test]
fn docs_list_every_error_and_close_code() {
    for code in ErrorCode::ALL {
        let row = format!("| {}  |", code.code());
        assert!(
            PROTOCOL_MD.contains(&row),
            "error code {code} not in the table"
        );
        let status = format!("| {} |", code.http_status());
        let line = PROTOCOL_MD
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_default();
        assert!(line.ends_with(&status), "{line}: expected HTTP {status}");
    }
    for code in close::ALL {
        let row = format!("| {code} | `{}`", close::reason(code));
        assert!(
            PROTOCOL_MD.contains(&row),
            "close code {code} not in the table"
        );
    }
    for code in [
        unsubscribe_code::SERVER,
        unsubscribe_code::PERMISSION_REVOKED,
        unsubscribe_code::INSUFFICIENT_STATE,
        unsubscribe_code::TOKEN_EXPIRED,
    ] {
        assert!(PROTOCOL_MD.contains(&format!("| {code}      |")), "{code}");
    }
}
