//! Every actor's state ([`State`]) and the actors ([`Actor`]):
//! stateright's callbacks dispatched to the server, backbone and client
//! code.

use std::borrow::Cow;
use std::collections::BTreeSet;

use stateright::actor::{Id, Out};
use wavecast_core::hub::Hub;
use wavecast_core::node::Node;

use crate::backbone::backbone_msg;
use crate::client::{arm, client_msg, client_timer};
use crate::server::{seal, Input, Log, ServerParams};
use crate::{BackboneState, ClientScript, ClientState, Msg, ServerState, Sub, Timer, CHANNELS};

/// Every actor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// A server.
    Server(Box<ServerState>),
    /// The backbone.
    Backbone(Box<BackboneState>),
    /// A client.
    Client(Box<ClientState>),
}

/// The actors.
#[derive(Clone, Debug)]
pub enum Actor {
    /// A server.
    Server {
        /// Its index (= its actor id = its backbone `NodeId`).
        index: usize,
        /// The backbone's id.
        backbone: Id,
        /// Link cuts allowed.
        cuts: u8,
        /// Node setup (mutations).
        setup: Option<fn(&mut Node)>,
        /// The node authenticates (`Config::auth`).
        auth: bool,
    },
    /// The backbone.
    Backbone {
        /// The server whose first publication event is lost.
        lose_to: Option<Id>,
    },
    /// A client.
    Client {
        /// Server ids, by index.
        servers: Vec<Id>,
        /// What it does.
        script: ClientScript,
        /// Its index among clients.
        index: usize,
    },
}

impl Actor {
    fn params(&self) -> Option<ServerParams> {
        match self {
            Actor::Server {
                index,
                backbone,
                cuts,
                setup,
                auth,
            } => Some(ServerParams {
                index: *index,
                backbone: *backbone,
                cuts: *cuts,
                setup: *setup,
                auth: *auth,
            }),
            _ => None,
        }
    }
}

impl stateright::actor::Actor for Actor {
    type Msg = Msg;
    type Timer = Timer;
    type State = State;
    type Storage = ();
    type Random = ();

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> State {
        match self {
            Actor::Server { .. } => {
                let params = self.params().expect("a server");
                State::Server(Box::new(seal(Log::default(), params.fresh())))
            }
            Actor::Backbone { lose_to } => State::Backbone(Box::new(BackboneState {
                hub: Hub::new(7),
                lose_to: *lose_to,
                withheld: None,
            })),
            Actor::Client {
                servers,
                script,
                index,
            } => {
                let mut state = ClientState {
                    me: *index,
                    server: Some(script.home),
                    conn: 0,
                    subs: vec![Sub::Idle; CHANNELS.len()],
                    pos: vec![None; CHANNELS.len()],
                    published: 0,
                    reconnects_left: script.reconnects,
                    silent: false,
                    connect_sent: false,
                    connect_reply: None,
                    got: BTreeSet::new(),
                    told_gap: false,
                    recovered_some: false,
                    violations: Vec::new(),
                };
                arm(servers, script, &mut state, o);
                State::Client(Box::new(state))
            }
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<State>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, state.to_mut()) {
            (Actor::Server { .. }, State::Server(s)) => {
                if let Some(params) = self.params() {
                    params.handle(s, Input::Msg(src, msg), o);
                }
            }
            (Actor::Backbone { .. }, State::Backbone(b)) => backbone_msg(b, src, msg, o),
            (
                Actor::Client {
                    servers, script, ..
                },
                State::Client(c),
            ) => client_msg(c, servers, script, src, msg, o),
            _ => {}
        }
        let _ = id;
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<State>, timer: &Timer, o: &mut Out<Self>) {
        match (self, state.to_mut()) {
            (Actor::Server { .. }, State::Server(s)) => match (self.params(), timer) {
                (Some(params), Timer::Cut) => params.handle(s, Input::Cut, o),
                (Some(params), Timer::Tick) => params.handle(s, Input::Tick, o),
                _ => {}
            },
            (
                Actor::Client {
                    servers, script, ..
                },
                State::Client(c),
            ) => client_timer(c, servers, script, timer, o),
            _ => {}
        }
    }
}
