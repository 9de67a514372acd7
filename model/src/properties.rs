//! What is checked of a whole model state: the verdicts clients recorded,
//! one order per channel, delivery and leaks at quiescence, heartbeat
//! liveness, authorization and token expiry (authenticating topology
//! only), and the `Sometimes` witnesses; [`add_properties`] gives the
//! model its property list.

use std::collections::{BTreeMap, BTreeSet};

use stateright::actor::{ActorModel, Id, Network};
use stateright::Expectation;
use wavecast_core::backbone::{BackboneCommand, NodeId};
use wavecast_core::hub::Hub;

use crate::{
    may_subscribe, Actor, BackboneState, ClientState, Config, Msg, Opaque, ServerState, State, Sub,
    TokenKind, CHANNELS, SECURED,
};

pub(crate) type ModelState = stateright::actor::ActorModelState<Actor, ()>;

pub(crate) fn servers(state: &ModelState) -> impl Iterator<Item = (usize, &ServerState)> {
    state
        .actor_states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &**s {
            State::Server(s) => Some((i, &**s)),
            _ => None,
        })
}

/// Every client's state with its index among clients.
fn clients(state: &ModelState) -> impl Iterator<Item = (usize, &ClientState)> {
    state.actor_states.iter().filter_map(|s| match &**s {
        State::Client(c) => Some((c.me, &**c)),
        _ => None,
    })
}

fn hub(state: &ModelState) -> Option<&Hub> {
    state.actor_states.iter().find_map(|s| match &**s {
        State::Backbone(b) => Some(&b.hub),
        _ => None,
    })
}

/// Nothing is in flight (no message, no publication awaiting its loss, no
/// silent connection awaiting its heartbeat expiry).
pub fn quiescent(state: &ModelState) -> bool {
    state.network.len() == 0
        && hub_state(state).is_none_or(|b| b.withheld.is_none())
        && servers(state).all(|(_, s)| s.t.silent.is_empty())
}

/// Clients still taking part (not silent).
fn active(state: &ModelState) -> impl Iterator<Item = (usize, &ClientState)> {
    clients(state).filter(|(_, c)| !c.silent)
}

fn hub_state(state: &ModelState) -> Option<&BackboneState> {
    state.actor_states.iter().find_map(|s| match &**s {
        State::Backbone(b) => Some(&**b),
        _ => None,
    })
}

/// Violations a client recorded (order, duplicates, silent gaps within a
/// subscription, wrong recovery, garbage frames).
pub fn client_violations(state: &ModelState) -> Vec<String> {
    clients(state)
        .flat_map(|(i, c)| c.violations.iter().map(move |v| format!("client {i}: {v}")))
        .collect()
}

/// Publications that two clients saw with different data at the same
/// (channel, epoch, offset): the channel's order is not one order.
pub fn order_conflicts(state: &ModelState) -> Vec<String> {
    let mut seen: BTreeMap<(u8, &str, u64), (usize, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, c) in clients(state) {
        for (_, ch, epoch, off, data) in &c.got {
            match seen.get(&(*ch, epoch.as_str(), *off)) {
                Some(&(j, d)) if d != *data => out.push(format!(
                    "{} offset {off}: client {j} got data {d}, client {i} got {data}",
                    CHANNELS[usize::from(*ch)]
                )),
                Some(_) => {}
                None => {
                    seen.insert((*ch, epoch, *off), (i, *data));
                }
            }
        }
    }
    out
}

/// Publications a client received on a channel its token does not let it
/// subscribe to (in a subscribe reply's recovery or pushed).
pub fn unpermitted_deliveries(cfg: &Config, state: &ModelState) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in clients(state) {
        let token = cfg.clients.get(i).and_then(|s| s.token);
        for (server, ch, _, off, data) in &c.got {
            if !may_subscribe(token, *ch) {
                out.push(format!(
                    "client {i} ({token:?}) got {} offset {off} (data {data}) on server {server}, \
                     a channel it may not subscribe to",
                    CHANNELS[usize::from(*ch)]
                ));
            }
        }
    }
    out
}

/// Token expiry closes that came too early, or did not come once due.
pub fn token_violations(state: &ModelState) -> Vec<String> {
    servers(state)
        .flat_map(|(i, s)| {
            s.t.token_errors
                .iter()
                .map(move |e| format!("server {i}: {e}"))
        })
        .collect()
}

/// At quiescence, every live subscription has received everything the
/// backbone sequenced in its epoch.
pub fn missing_deliveries(state: &ModelState) -> Vec<String> {
    let mut out = Vec::new();
    if !quiescent(state) {
        return out;
    }
    let Some(hub) = hub(state) else { return out };
    let stats = hub.channels();
    for (i, c) in active(state) {
        for (ch, sub) in c.subs.iter().enumerate() {
            if let Sub::Live { epoch, last } = sub {
                let top = stats.iter().find(|s| s.name == CHANNELS[ch]);
                match top {
                    Some(s) if s.epoch == *epoch && s.top == *last => {}
                    Some(s) => out.push(format!(
                        "client {i} on {} has ({epoch}, {last}), backbone has ({}, {})",
                        CHANNELS[ch], s.epoch, s.top
                    )),
                    None => out.push(format!(
                        "client {i} live on {} which the backbone dropped",
                        CHANNELS[ch]
                    )),
                }
            }
        }
    }
    out
}

/// At quiescence: each server's backbone subscriptions are exactly its
/// channels with local subscribers, and nothing remains of closed
/// connections (connections, subscriptions, requests, queued bytes,
/// timers, presence).
pub fn leaks(cfg: &Config, state: &ModelState) -> Vec<String> {
    let mut out = Vec::new();
    if !quiescent(state) {
        return out;
    }
    let Some(hub) = hub(state) else { return out };
    let stats = hub.channels();
    let clients: Vec<(usize, &ClientState)> = active(state).collect();
    for (i, s) in servers(state) {
        let node = &s.summary;
        let local: BTreeSet<&str> = node.channels.keys().map(String::as_str).collect();
        let subscribed: BTreeSet<&str> = stats
            .iter()
            .filter(|c| c.nodes.contains(&NodeId(i as u32)))
            .map(|c| c.name.as_str())
            .collect();
        if local != subscribed {
            out.push(format!(
                "server {i}: local channels {local:?}, backbone subscriptions {subscribed:?}"
            ));
        }
        let here: Vec<&(usize, &ClientState)> = clients
            .iter()
            .filter(|(_, c)| c.server == Some(i))
            .collect();
        if node.connections != here.len() || s.t.conns.len() != here.len() {
            out.push(format!(
                "server {i}: {} connections in the node, {} hosted, {} clients connected",
                node.connections,
                s.t.conns.len(),
                here.len()
            ));
        }
        if node.requests != 0 {
            out.push(format!(
                "server {i}: {} requests in flight at quiescence",
                node.requests
            ));
        }
        if node.queued_bytes != 0 {
            out.push(format!("server {i}: {} bytes queued", node.queued_bytes));
        }
        // One timer per connection, and one more per connection whose
        // token expires (its expiry deadline).
        if node.timers != node.connections + s.t.expiring.len() {
            out.push(format!(
                "server {i}: {} timers for {} connections, {} with an expiring token",
                node.timers,
                node.connections,
                s.t.expiring.len()
            ));
        }
        for (ch, name) in CHANNELS.iter().enumerate() {
            let live = here
                .iter()
                .filter(|(_, c)| matches!(c.subs.get(ch), Some(Sub::Live { .. })))
                .count();
            if node.channels.get(*name).copied().unwrap_or(0) != live {
                out.push(format!(
                    "server {i}: {} subscribers of {name}, {live} clients subscribed",
                    node.channels.get(*name).copied().unwrap_or(0)
                ));
            }
        }
    }
    for (ch, name) in CHANNELS.iter().enumerate() {
        let live = clients
            .iter()
            .filter(|(_, c)| matches!(c.subs.get(ch), Some(Sub::Live { .. })))
            .count();
        let present = hub.presence(name).len();
        if present != live {
            out.push(format!("{present} present in {name}, {live} subscribed"));
        }
    }
    let _ = cfg;
    out
}

pub(crate) fn add_properties(
    model: ActorModel<Actor, Config, ()>,
) -> ActorModel<Actor, Config, ()> {
    let auth = model.cfg.auth;
    let model = if auth {
        add_auth_properties(model)
    } else {
        model
    };
    model
        .property(
            Expectation::Always,
            "one order, no duplicates, no silent gap, exact recovery",
            |_, s| client_violations(s).is_empty() && order_conflicts(s).is_empty(),
        )
        .property(
            Expectation::Always,
            "quiescent: every publication delivered",
            |_, s| missing_deliveries(s).is_empty(),
        )
        .property(Expectation::Always, "quiescent: no leaks", |m, s| {
            leaks(&m.cfg, s).is_empty()
        })
        .property(
            Expectation::Always,
            "heartbeat: a silent peer is dropped in time",
            |_, s| servers(s).all(|(_, s)| s.t.late.is_empty()),
        )
        .property(
            Expectation::Sometimes,
            "a silent peer dropped by the heartbeat",
            |_, s| servers(s).any(|(_, s)| s.t.expired > 0),
        )
        .property(
            Expectation::Sometimes,
            "a publication delivered on two servers",
            |_, s| {
                let mut seen: BTreeMap<(u8, &str, u64), BTreeSet<usize>> = BTreeMap::new();
                for (_, c) in clients(s) {
                    for (server, ch, epoch, off, _) in &c.got {
                        seen.entry((*ch, epoch, *off)).or_default().insert(*server);
                    }
                }
                seen.values().any(|servers| servers.len() >= 2)
            },
        )
        .property(
            Expectation::Sometimes,
            "a recovery with recovered:true",
            |_, s| clients(s).any(|(_, c)| c.recovered_some),
        )
        .property(Expectation::Sometimes, "a gap signalled", |_, s| {
            clients(s).any(|(_, c)| c.told_gap)
        })
        .property(
            Expectation::Sometimes,
            "publishes from two servers in flight at once",
            |_, s| {
                // (`Network::iter_all` loops forever on an ordered network in
                // stateright 0.31: read the links directly.)
                let Network::Ordered(links) = &s.network else {
                    return false;
                };
                let from: BTreeSet<Id> = links
                    .iter()
                    .filter(|(_, msgs)| {
                        msgs.iter()
                            .any(|m| matches!(m, Msg::Cmd(Opaque(BackboneCommand::Publish { .. }))))
                    })
                    .map(|((src, _), _)| *src)
                    .collect();
                from.len() >= 2
            },
        )
}

/// The authenticating topology's properties (`Config::auth`).
fn add_auth_properties(model: ActorModel<Actor, Config, ()>) -> ActorModel<Actor, Config, ()> {
    fn valid(m: &ActorModel<Actor, Config, ()>, i: usize) -> bool {
        m.cfg.clients.get(i).and_then(|s| s.token) == Some(TokenKind::Valid)
    }
    model
        .property(
            Expectation::Always,
            "auth: no publication of a channel the connection may not subscribe to",
            |m, s| unpermitted_deliveries(&m.cfg, s).is_empty(),
        )
        .property(
            Expectation::Always,
            "auth: an unrefreshed token closes its connection at exp + grace, never before",
            |_, s| token_violations(s).is_empty(),
        )
        .property(
            Expectation::Sometimes,
            "auth: a secured channel's publication delivered",
            |m, s| clients(s).any(|(i, c)| valid(m, i) && c.got.iter().any(|g| g.1 == SECURED)),
        )
        .property(
            Expectation::Sometimes,
            "auth: an open channel's publication delivered to an unauthenticated client",
            |m, s| clients(s).any(|(i, c)| !valid(m, i) && c.got.iter().any(|g| g.1 != SECURED)),
        )
        .property(
            Expectation::Sometimes,
            "auth: a subscribe refused for lack of permission",
            |_, s| clients(s).any(|(_, c)| c.subs.contains(&Sub::Denied)),
        )
        .property(
            Expectation::Sometimes,
            "auth: a connection closed at its token's expiry",
            |_, s| servers(s).any(|(_, s)| s.t.token_closes > 0),
        )
}
