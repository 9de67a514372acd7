//! The backbone actor: a real `wavecast_core::hub::Hub` with Redis's
//! semantics for a lost link, and the loss of one publication event in
//! transit (`Config::lose_first_pub_to`).

use stateright::actor::{Id, Out};
use wavecast_core::backbone::{BackboneEvent, NodeId};
use wavecast_core::hub::Hub;
use wavecast_core::Timestamp;

use crate::msg::Outbox;
use crate::{Actor, Msg, Opaque};

/// The backbone's only instant (see the crate docs).
const NOW: Timestamp = Timestamp::ZERO;

/// Backbone state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackboneState {
    /// The sequencer.
    pub hub: Hub,
    /// The server whose first publication event is to be lost, while
    /// that loss is still to come.
    pub lose_to: Option<Id>,
    /// A publication event lost in transit, not yet revealed: it is
    /// dropped when the next publication of its channel goes to the same
    /// server (the state is not quiescent meanwhile).
    pub withheld: Option<(Id, String)>,
}

pub(crate) fn backbone_msg(b: &mut BackboneState, src: Id, msg: Msg, o: &mut Out<Actor>) {
    let mut out = Outbox::default();
    backbone_one(b, src, msg, &mut out);
    out.send(o);
}

fn backbone_one(b: &mut BackboneState, src: Id, msg: Msg, out: &mut Outbox) {
    let node = NodeId(u32::try_from(usize::from(src)).unwrap_or(u32::MAX));
    match msg {
        Msg::Cmd(Opaque(cmd)) => b.hub.handle_command(NOW, node, cmd),
        Msg::Reconnect => {
            // Redis forgets a closed connection's subscriptions (and the
            // presence it refreshed); the stream (history) survives.
            b.hub.remove_node(NOW, node);
            // Whatever was in flight to it is lost with the link.
            if b.withheld.as_ref().is_some_and(|(to, _)| *to == src) {
                b.withheld = None;
            }
            flush_hub(b, out);
            out.push(src, Msg::Ev(Opaque(BackboneEvent::Reset)));
        }
        Msg::Batch(msgs) => {
            for msg in msgs {
                backbone_one(b, src, msg, out);
            }
        }
        _ => {}
    }
    flush_hub(b, out);
}

fn flush_hub(b: &mut BackboneState, out: &mut Outbox) {
    while let Some((to, event)) = b.hub.poll_event() {
        let to = Id::from(to.0 as usize);
        if let BackboneEvent::Publication { channel, .. } = &event {
            if b.lose_to == Some(to) {
                b.lose_to = None;
                b.withheld = Some((to, channel.clone()));
                continue;
            }
            if b.withheld.as_ref() == Some(&(to, channel.clone())) {
                b.withheld = None;
            }
        }
        out.push(to, Msg::Ev(Opaque(event)));
    }
}
