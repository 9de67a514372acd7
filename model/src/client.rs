//! The client actor: its state ([`ClientState`], a [`Sub`] per channel),
//! its script's actions (connect, subscribe, publish, disconnect, go
//! silent), and the checks it makes of what it receives (order, gaps,
//! recovery), kept as verdicts in its state.

use std::collections::BTreeSet;

use stateright::actor::{model_timeout, Id, Out};
use wavecast_core::protocol::{close, unsubscribe_code, ErrorCode};

use crate::{Actor, ClientScript, Msg, Timer, CHANNELS};

/// A client's view of one channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sub {
    /// Not subscribed.
    Idle,
    /// Subscribe sent, from this position if recovering.
    Pending(Option<(String, u64)>),
    /// Subscribed: epoch and last offset received.
    Live {
        /// The subscription's epoch.
        epoch: String,
        /// The last offset received.
        last: u64,
    },
    /// Refused for lack of permission (104): not tried again on this
    /// connection.
    Denied,
}

/// A client actor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Its index among clients.
    pub me: usize,
    /// Index of the server it is connected to.
    pub server: Option<usize>,
    /// Current connection number.
    pub conn: u32,
    /// Per channel.
    pub subs: Vec<Sub>,
    /// Per channel: last position seen, kept across connections.
    pub pos: Vec<Option<(String, u64)>>,
    /// Publications of its script already sent.
    pub published: usize,
    /// Reconnects left.
    pub reconnects_left: u8,
    /// Has gone silent: it does nothing more and counts as gone.
    pub silent: bool,
    /// Its `connect` was sent on the current connection (clients with a
    /// token kind only).
    pub connect_sent: bool,
    /// The last connect reply: the user (empty: anonymous), or the error
    /// code.
    pub connect_reply: Option<Result<String, u64>>,
    /// Publications received: (server index, channel, epoch, offset,
    /// data).
    pub got: BTreeSet<(usize, u8, String, u64, u64)>,
    /// Was told of a gap (unsubscribe 2500, close 4003, `recovered: false`).
    pub told_gap: bool,
    /// Recovered at least one publication with `recovered: true`.
    pub recovered_some: bool,
    /// Violations seen (order, duplicates, silent gaps, recovery), as text.
    pub violations: Vec<String>,
}

/// What a connected client does next: `connect` first if its script has
/// a token kind, (re)subscribe at once to every channel of its script it
/// is not subscribed to (with recover when it has a position) and was not
/// refused, and, once all are live or refused, arm the timers of its other
/// actions (publish, disconnect).
pub(crate) fn arm(servers: &[Id], script: &ClientScript, c: &mut ClientState, o: &mut Out<Actor>) {
    let Some(server) = c.server.and_then(|s| servers.get(s).copied()) else {
        return;
    };
    // Sent as one message (one batch, read by the server in one step), as
    // a client pipelines its first commands.
    let mut out = Vec::new();
    if let Some(token) = script.token.filter(|_| !c.connect_sent) {
        c.connect_sent = true;
        out.push(Msg::Connect {
            conn: c.conn,
            token,
        });
    }
    for &ch in &script.subscribe {
        let i = usize::from(ch);
        if c.subs.get(i) == Some(&Sub::Idle) {
            let recover = c.pos.get(i).cloned().flatten();
            c.subs[i] = Sub::Pending(recover.clone());
            out.push(Msg::Subscribe {
                conn: c.conn,
                ch,
                recover,
            });
        }
    }
    match out.len() {
        0 => {}
        1 => o.send(server, out.remove(0)),
        _ => o.send(server, Msg::Batch(out)),
    }
    let all_live = script.subscribe.iter().all(|&ch| {
        matches!(
            c.subs.get(usize::from(ch)),
            Some(Sub::Live { .. } | Sub::Denied)
        )
    });
    if !all_live {
        return;
    }
    if c.published < script.publish.len() {
        o.set_timer(Timer::Publish, model_timeout());
    }
    if c.reconnects_left > 0 {
        o.set_timer(Timer::Disconnect, model_timeout());
    }
    if script.silent && !c.silent {
        o.set_timer(Timer::GoSilent, model_timeout());
    }
}

/// The connection ended: every subscription with it (positions are kept).
fn disconnected(c: &mut ClientState) {
    c.server = None;
    c.connect_sent = false;
    for sub in &mut c.subs {
        *sub = Sub::Idle;
    }
}

pub(crate) fn client_timer(
    c: &mut ClientState,
    servers: &[Id],
    script: &ClientScript,
    timer: &Timer,
    o: &mut Out<Actor>,
) {
    let Some(server) = c.server.and_then(|s| servers.get(s).copied()) else {
        if let Timer::Connect(j) = *timer {
            let Some(&to) = servers.get(j) else { return };
            for k in 0..servers.len() {
                o.cancel_timer(Timer::Connect(k));
            }
            c.conn += 1;
            c.server = Some(j);
            let _ = to;
            arm(servers, script, c, o);
        }
        return;
    };
    if c.silent {
        return;
    }
    let conn = c.conn;
    match *timer {
        Timer::GoSilent => {
            c.silent = true;
            o.send(server, Msg::Silent { conn });
            for t in [Timer::Publish, Timer::Disconnect] {
                o.cancel_timer(t);
            }
        }
        Timer::Publish => {
            if let Some(&ch) = script.publish.get(c.published) {
                c.published += 1;
                // Unique data: client index and publication number.
                let data = c.me as u64 * 100 + c.published as u64;
                o.send(server, Msg::Publish { conn, ch, data });
                if c.published < script.publish.len() {
                    o.set_timer(Timer::Publish, model_timeout());
                }
            }
        }
        Timer::Disconnect => {
            if c.reconnects_left > 0 {
                c.reconnects_left -= 1;
                o.send(server, Msg::Disconnect { conn });
                disconnected(c);
                for sub in [Timer::Publish, Timer::Disconnect] {
                    o.cancel_timer(sub);
                }
                for k in 0..servers.len() {
                    o.set_timer(Timer::Connect(k), model_timeout());
                }
            }
        }
        Timer::Connect(_) | Timer::Cut | Timer::Tick => {}
    }
}

pub(crate) fn client_msg(
    c: &mut ClientState,
    servers: &[Id],
    script: &ClientScript,
    src: Id,
    msg: Msg,
    o: &mut Out<Actor>,
) {
    if let Msg::Batch(msgs) = msg {
        for msg in msgs {
            client_msg(c, servers, script, src, msg, o);
        }
        return;
    }
    if c.silent {
        return; // reads nothing any more
    }
    client_one(c, servers, src, msg, o);
    arm(servers, script, c, o);
}

fn client_one(c: &mut ClientState, servers: &[Id], src: Id, msg: Msg, o: &mut Out<Actor>) {
    let Some(server) = c.server else { return };
    if servers.get(server) != Some(&src) {
        return; // from a connection it has left
    }
    let conn = c.conn;
    match msg {
        Msg::Subscribed {
            conn: k,
            ch,
            epoch,
            offset,
            recovery,
        } if k == conn => {
            let i = usize::from(ch);
            let Some(Sub::Pending(from)) = c.subs.get(i).cloned() else {
                c.violations
                    .push(format!("unexpected subscribe reply on {ch}"));
                return;
            };
            if let (Some((from_epoch, from_off)), Some((recovered, pubs))) = (&from, &recovery) {
                if *recovered {
                    let want: Vec<u64> = (from_off + 1..=offset).collect();
                    let got: Vec<u64> = pubs.iter().map(|p| p.0).collect();
                    if *from_epoch != epoch || got != want {
                        c.violations.push(format!(
                            "recovered:true from ({from_epoch}, {from_off}) gave {pubs:?} \
                             up to ({epoch}, {offset}), want {want:?}"
                        ));
                    }
                    if !pubs.is_empty() {
                        c.recovered_some = true;
                    }
                    for &(p, data) in pubs {
                        c.got.insert((server, ch, epoch.clone(), p, data));
                    }
                } else {
                    c.told_gap = true;
                }
            }
            c.subs[i] = Sub::Live {
                epoch: epoch.clone(),
                last: offset,
            };
            c.pos[i] = Some((epoch, offset));
        }
        Msg::SubscribeFailed { conn: k, ch, code } if k == conn => {
            if let Some(sub) = c.subs.get_mut(usize::from(ch)) {
                *sub = if code == u64::from(ErrorCode::PermissionDenied.code()) {
                    Sub::Denied
                } else {
                    Sub::Idle
                };
            }
        }
        Msg::Connected { conn: k, user, .. } if k == conn => c.connect_reply = Some(Ok(user)),
        Msg::ConnectFailed { conn: k, code } if k == conn => c.connect_reply = Some(Err(code)),
        Msg::Pub {
            conn: k,
            ch,
            offset,
            data,
        } if k == conn => {
            let i = usize::from(ch);
            match c.subs.get(i).cloned() {
                Some(Sub::Live { epoch, last }) => {
                    if offset <= last {
                        c.violations.push(format!(
                            "order/duplicate: offset {offset} after {last} on {}",
                            CHANNELS[i]
                        ));
                    } else if offset > last + 1 {
                        c.violations.push(format!(
                            "silent gap: offset {offset} after {last} on {}",
                            CHANNELS[i]
                        ));
                    }
                    c.got.insert((server, ch, epoch.clone(), offset, data));
                    let last = last.max(offset);
                    c.subs[i] = Sub::Live {
                        epoch: epoch.clone(),
                        last,
                    };
                    c.pos[i] = Some((epoch, last));
                }
                _ => c
                    .violations
                    .push(format!("publication {offset} on unsubscribed {ch}")),
            }
        }
        Msg::Unsubscribed { conn: k, ch, code } if k == conn => {
            if code == u64::from(unsubscribe_code::INSUFFICIENT_STATE) {
                c.told_gap = true;
            }
            if let Some(sub) = c.subs.get_mut(usize::from(ch)) {
                *sub = Sub::Idle;
            }
        }
        Msg::Closed { conn: k, code } if k == conn => {
            if code == close::INSUFFICIENT_STATE.0 {
                c.told_gap = true;
            }
            // Answer as a client that goes away: end the transport.
            o.send(src, Msg::Disconnect { conn });
            disconnected(c);
        }
        Msg::Garbage { conn: k, what } if k == conn => {
            c.violations.push(format!("garbage from server: {what}"));
        }
        _ => {}
    }
}
