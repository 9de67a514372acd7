//! wavecast-model: a stateright model of multi-server wavecast topologies,
//! built from the same `wavecast_core` code the runtime runs.
//!
//! Actors (see docs/MODEL.md for what is and is not modelled):
//!
//! - **servers** ([`Actor::Server`]): each owns a real
//!   [`wavecast_core::node::Node`] and hosts its clients' WebSocket
//!   connections. A client's abstract command becomes a masked JSON frame
//!   fed to `Node::handle_read`; the node's outbound bytes are decoded
//!   (client-side frame decoder + the core's
//!   [`decode_server_message`](wavecast_core::protocol::decode_server_message))
//!   back into abstract messages. The node's backbone commands go to the
//!   backbone actor as they are.
//! - **the backbone** ([`Actor::Backbone`]): a real
//!   [`wavecast_core::hub::Hub`], the sequencer of every channel, with
//!   Redis's semantics for a lost link: a server whose link is cut
//!   ([`Timer::Cut`]) loses every backbone message in flight to it, and on
//!   reconnecting the backbone forgets its subscriptions and presence (as
//!   Redis forgets a closed connection's) and sends it `Event::Reset`.
//!   History survives.
//! - **clients** ([`Actor::Client`]): connect to a server (with a
//!   `connect` carrying a valid, expired or no token, in the
//!   authenticating topology [`Config::auth`]), subscribe, publish,
//!   disconnect and reconnect to any server, resubscribing with `recover`
//!   from the last position they saw, or go silent. They check what they
//!   receive as they receive it (order, gaps, recovery) and keep the
//!   verdicts in their state, where the properties read them.
//!
//! Network: stateright's ordered network, FIFO per directed pair of actors
//! (every real link here is one TCP connection); messages on different
//! links interleave freely.
//!
//! Time: the backbone's clock stays at zero (history never expires); a
//! server's clock moves (`Timer::Tick`, to the node's next deadline) only
//! while it holds the connection of a client that has gone silent, so that
//! the heartbeat can expire it, or one authenticated with an expiring
//! token, so that its expiry can close it (there a tick first stops one
//! microsecond before the deadline); the transports of other clients
//! answer the node's pings at once.
//!
//! Modules, bottom up:
//!
//! - `auth`: the authenticating topology's node settings, tokens (signed
//!   once) and expectations ([`may_subscribe`], [`EXPIRY_CLOSE`]).
//! - `msg`: the messages ([`Msg`], [`Opaque`]) and timers ([`Timer`])
//!   actors exchange, and the per-step outbox that batches them.
//! - `wire`: a client's side of the WebSocket link: abstract commands
//!   encoded as masked JSON frames, the server's bytes decoded back into
//!   [`Msg`]s.
//! - `server`: the server actor: [`ServerState`], the node's replay log
//!   and per-thread cache, how a node handles messages and is drained.
//! - `backbone`: the backbone actor ([`BackboneState`]) around the hub.
//! - `client`: the client actor ([`ClientState`], [`Sub`]) and the checks
//!   it makes of what it receives.
//! - `actor`: [`State`] and [`Actor`], dispatching stateright's callbacks
//!   to the three kinds of actor.
//! - `properties`: what is checked of a whole state ([`quiescent`],
//!   [`client_violations`], [`order_conflicts`], [`missing_deliveries`],
//!   [`leaks`], [`unpermitted_deliveries`], [`token_violations`]) and the
//!   model's property list.
//! - `checker`: runs stateright's checker and renders discovered paths.
//! - this file: the topology ([`Config`], [`ClientScript`]) and the entry
//!   points ([`check`], [`find_violation`], [`Outcome`]).

#![warn(missing_docs)]

mod actor;
mod auth;
mod backbone;
mod checker;
mod client;
mod msg;
mod properties;
mod server;
mod wire;

use std::collections::BTreeMap;

use stateright::actor::{ActorModel, Id, Network};
use wavecast_core::node::Node;

pub use actor::{Actor, State};
pub use auth::{may_subscribe, TokenKind, EXPIRY_CLOSE, SECURED};
pub use backbone::BackboneState;
pub use client::{ClientState, Sub};
pub use msg::{Msg, Opaque, Timer};
pub use properties::{
    client_violations, leaks, missing_deliveries, order_conflicts, quiescent, token_violations,
    unpermitted_deliveries,
};
pub use server::{NodeSummary, ServerState, Transport};

use checker::run;
use properties::add_properties;

/// Channel names, by index. `a` and `b` are the open topologies'
/// channels; `priv:c` ([`SECURED`]) is only used by [`Config::auth`],
/// where only authenticated connections may subscribe to it.
pub const CHANNELS: [&str; 3] = ["a", "b", "priv:c"];

/// What one client does, in order where order matters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientScript {
    /// The server it first connects to.
    pub home: usize,
    /// Channels (indexes into [`CHANNELS`]) it subscribes to.
    pub subscribe: Vec<u8>,
    /// Channels it publishes to, one publication each, in this order.
    pub publish: Vec<u8>,
    /// How often it disconnects (and then reconnects to any server).
    pub reconnects: u8,
    /// Whether it goes silent (stops reading and answering) once
    /// subscribed, so that only the heartbeat can drop its connection.
    pub silent: bool,
    /// The token it sends in a `connect` before its first subscribe
    /// (`None`: it sends no `connect`, as on an open server).
    pub token: Option<TokenKind>,
}

/// A topology to check.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of servers.
    pub servers: usize,
    /// One script per client.
    pub clients: Vec<ClientScript>,
    /// Per server: how often its backbone link may be cut.
    pub cuts: Vec<u8>,
    /// Applied to every node after it is created (tests plant core's
    /// mutations with it).
    pub setup_node: Option<fn(&mut Node)>,
    /// Lose the first publication event the backbone sends to this server
    /// (index); the loss is revealed by the next publication of the same
    /// channel to that server, as a lost pub/sub message would be.
    pub lose_first_pub_to: Option<usize>,
    /// The nodes authenticate (see [`Config::auth`]); the authorization
    /// properties are checked.
    pub auth: bool,
}

impl Config {
    /// The default topology for `servers` servers and `clients` clients.
    /// Client `i` starts on server `i % servers`. Clients `3k` and `3k+1`
    /// subscribe to channel a and publish to it once (on two servers, so
    /// publishes race and a publication reaches two servers); client `3k+2`
    /// subscribes to channel b, publishes to it once, and disconnects once
    /// and reconnects to any server (recovery). Server 0's backbone link
    /// may be cut once (gap filling; with channel b unpublished, a gap
    /// history cannot fill).
    pub fn standard(servers: usize, clients: usize) -> Config {
        let servers = servers.max(1);
        let scripts = (0..clients)
            .map(|i| {
                let b = i % 3 == 2;
                ClientScript {
                    home: i % servers,
                    subscribe: vec![u8::from(b)],
                    publish: vec![u8::from(b)],
                    reconnects: u8::from(b),
                    silent: false,
                    token: None,
                }
            })
            .collect();
        let mut cuts = vec![0; servers];
        cuts[0] = 1;
        Config {
            servers,
            clients: scripts,
            cuts,
            setup_node: None,
            lose_first_pub_to: None,
            auth: false,
        }
    }

    /// The authenticating topology: nodes verify tokens (HMAC), allow
    /// anonymous connections, and let only authenticated connections
    /// subscribe to `priv:c` ([`SECURED`]); `a` is open. Three clients, on
    /// servers `0, 1, 0` (modulo `servers`), each sends `connect` first and
    /// subscribes to `a` and `priv:c`: client 0 holds a valid token
    /// (expiring at [`EXPIRY_CLOSE`] minus the grace) and publishes once
    /// to `priv:c`; client 1 holds an expired token (refused 111, then
    /// anonymous); client 2 connects without a token and publishes once to
    /// `a`. No cuts, no reconnects. A server's clock moves while it holds
    /// a connection whose token expires.
    pub fn auth(servers: usize) -> Config {
        let servers = servers.max(1);
        let client = |home: usize, token: TokenKind, publish: Vec<u8>| ClientScript {
            home: home % servers,
            subscribe: vec![0, SECURED],
            publish,
            reconnects: 0,
            silent: false,
            token: Some(token),
        };
        Config {
            servers,
            clients: vec![
                client(0, TokenKind::Valid, vec![SECURED]),
                client(1, TokenKind::Expired, vec![]),
                client(2, TokenKind::Absent, vec![0]),
            ],
            cuts: vec![0; servers],
            setup_node: None,
            lose_first_pub_to: None,
            auth: true,
        }
    }

    fn backbone(&self) -> Id {
        Id::from(self.servers)
    }

    /// The stateright model of this topology.
    pub fn into_model(self) -> ActorModel<Actor, Config, ()> {
        let mut model = ActorModel::new(self.clone(), ()).init_network(Network::new_ordered([]));
        for i in 0..self.servers {
            model = model.actor(Actor::Server {
                index: i,
                backbone: self.backbone(),
                cuts: self.cuts.get(i).copied().unwrap_or(0),
                setup: self.setup_node,
                auth: self.auth,
            });
        }
        model = model.actor(Actor::Backbone {
            lose_to: self.lose_first_pub_to.map(Id::from),
        });
        for (i, script) in self.clients.iter().enumerate() {
            model = model.actor(Actor::Client {
                servers: (0..self.servers).map(Id::from).collect(),
                script: script.clone(),
                index: i,
            });
        }
        add_properties(model)
    }
}

/// Result of a check.
#[derive(Debug)]
pub struct Outcome {
    /// Unique states explored.
    pub unique_states: usize,
    /// States generated (with repeats).
    pub states: usize,
    /// Deepest path explored.
    pub max_depth: usize,
    /// Each property: name, and the path that discovered it (a
    /// counterexample for `Always`, a witness for `Sometimes`).
    pub discoveries: BTreeMap<&'static str, String>,
    /// Names of the `Always` properties.
    pub always: Vec<&'static str>,
    /// Names of the `Sometimes` properties.
    pub sometimes: Vec<&'static str>,
}

/// Explores `cfg` breadth first to `depth` steps (0: all of it) with
/// `threads` threads.
pub fn check(cfg: Config, depth: usize, threads: usize) -> Outcome {
    run(cfg, depth, threads, false)
}

/// Like [`check`], but stops at the first violated `Always` property (for
/// hunting counterexamples; state counts then vary between runs).
pub fn find_violation(cfg: Config, depth: usize, threads: usize) -> Outcome {
    run(cfg, depth, threads, true)
}
