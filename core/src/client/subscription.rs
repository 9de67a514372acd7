//! One subscription's bookkeeping on the client: its state, its position in
//! the channel's stream (epoch and last offset), its subscription token,
//! whose side it is (the application's, the server's, or both), and the
//! delivery rule that turns what the server sends into what the
//! application may trust: every publication once, in offset order, or a
//! gap said out loud.

use crate::protocol::{Publication, Recovery, StreamPosition};

/// Where a subscription stands (the JavaScript client's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubState {
    /// Not subscribed and not trying to be.
    Unsubscribed,
    /// A subscribe is on its way (or waits for the connection).
    Subscribing,
    /// Subscribed: publications arrive.
    Subscribed,
}

/// Why the application may have missed publications.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// The server could not recover from the position asked
    /// (`recovered: false`: another epoch, or history moved past it).
    NotRecovered,
    /// A recovery's publications did not continue the position asked (or
    /// a server-side subscription came back behind the last position).
    BadRecovery,
    /// A server-side subscription came back (after a reconnect) further on
    /// in the same epoch: the publications after `since` up to the new
    /// offset went by while disconnected. The server does not recover
    /// server-side subscriptions; `history` since `since` may still hold
    /// them.
    Missed {
        /// The last position delivered before.
        since: StreamPosition,
    },
}

/// What one subscribe reply means for the application, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Settled {
    /// Whether every publication after the asked position was recovered.
    pub recovered: bool,
    /// Recovered publications to deliver, in order.
    pub publications: Vec<Publication>,
    /// Set when something may have been missed.
    pub gap: Option<GapReason>,
}

/// What to do with a publication push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The next one: deliver it.
    Next,
    /// Already delivered (offset not above the position): drop it.
    Duplicate,
    /// Later than the next one: something between was lost; resubscribe
    /// with recover from the position to get it back.
    Hole {
        /// The offset expected.
        expected: u64,
    },
    /// Not subscribed (a push after an unsubscribe, or before the reply):
    /// drop it.
    Ignore,
}

/// One channel's subscription.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Subscription {
    pub state: SubState,
    /// The last position delivered to the application (kept across
    /// connections; the `recover` of the next subscribe).
    pub position: Option<StreamPosition>,
    /// The id of the subscribe in flight.
    pub request: Option<u64>,
    /// The subscription token, sent with every subscribe of the channel.
    pub token: Option<String>,
    /// Bumped each time the application replaces the token.
    pub token_seq: u64,
    /// The `token_seq` of the subscribe in flight.
    pub sent_seq: u64,
    /// The `token_seq` of the token the server holds for the live
    /// subscription (its subscribe's, or an accepted `sub_refresh`'s).
    pub server_seq: u64,
    /// The token expired (unsubscribe push 2501, or a subscribe refused
    /// with 111): nothing is sent until the application gives a new one.
    pub waiting_token: bool,
    /// The application subscribed it (`Client::subscribe`): the client
    /// subscribes it on every connection.
    pub client_side: bool,
    /// The last connect reply listed it: the server subscribed it, and
    /// does so again on the next connect.
    pub server_side: bool,
    /// Bumped each time the subscription goes live, so that a reply to a
    /// `sub_refresh` of an earlier one is told apart.
    pub incarnation: u64,
}

impl Subscription {
    /// The application's subscription, from `since` if given.
    pub fn new(since: Option<StreamPosition>, token: Option<String>) -> Subscription {
        Subscription {
            state: SubState::Subscribing,
            position: since,
            request: None,
            token,
            token_seq: 0,
            sent_seq: 0,
            server_seq: 0,
            waiting_token: false,
            client_side: true,
            server_side: false,
            incarnation: 0,
        }
    }

    /// A subscription the server made on connect (not the application's).
    pub fn server() -> Subscription {
        Subscription {
            client_side: false,
            server_side: true,
            ..Subscription::new(None, None)
        }
    }

    /// Takes the subscribe reply: the channel is at `epoch`/`offset` now.
    pub fn settle(&mut self, epoch: String, offset: u64, recovery: Option<Recovery>) -> Settled {
        self.go_live();
        self.server_seq = self.sent_seq;
        let asked = self.position.take();
        let settled = match (asked, recovery) {
            // A first subscribe: the stream starts now.
            (None, _) => Settled {
                recovered: false,
                publications: Vec::new(),
                gap: None,
            },
            (Some(asked), Some(r)) if r.recovered => {
                let continues = asked.epoch == epoch
                    && r.publications
                        .iter()
                        .zip(asked.offset + 1..)
                        .all(|(p, want)| p.offset == want)
                    && asked.offset + r.publications.len() as u64 == offset;
                if continues {
                    Settled {
                        recovered: true,
                        publications: r.publications,
                        gap: None,
                    }
                } else {
                    Settled {
                        recovered: false,
                        publications: Vec::new(),
                        gap: Some(GapReason::BadRecovery),
                    }
                }
            }
            // Asked, and told it is gone (or not told at all).
            (Some(_), _) => Settled {
                recovered: false,
                publications: Vec::new(),
                gap: Some(GapReason::NotRecovered),
            },
        };
        self.position = Some(StreamPosition { epoch, offset });
        settled
    }

    /// Takes a server-side subscription's start from a connect reply: the
    /// server recovers nothing for it, so the last position delivered
    /// (if any) is compared with where it starts now.
    pub fn settle_server(&mut self, at: StreamPosition) -> Settled {
        self.go_live();
        let last = self.position.take();
        let continued = last.is_some();
        let gap = match last {
            None => None,
            Some(last) if last.epoch != at.epoch => Some(GapReason::NotRecovered),
            Some(last) if last.offset == at.offset => None,
            Some(last) if last.offset < at.offset => Some(GapReason::Missed { since: last }),
            Some(_) => Some(GapReason::BadRecovery),
        };
        let recovered = continued && gap.is_none();
        self.position = Some(at);
        Settled {
            recovered,
            publications: Vec::new(),
            gap,
        }
    }

    fn go_live(&mut self) {
        self.state = SubState::Subscribed;
        self.request = None;
        self.waiting_token = false;
        self.incarnation += 1;
    }

    /// Sorts a publication push and, for [`Arrival::Next`], advances the
    /// position.
    pub fn arrive(&mut self, offset: u64) -> Arrival {
        if self.state != SubState::Subscribed {
            return Arrival::Ignore;
        }
        let Some(position) = self.position.as_mut() else {
            return Arrival::Ignore;
        };
        let expected = position.offset + 1;
        if offset == expected {
            position.offset = offset;
            Arrival::Next
        } else if offset < expected {
            Arrival::Duplicate
        } else {
            Arrival::Hole { expected }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Payload;

    fn pos(epoch: &str, offset: u64) -> Option<StreamPosition> {
        Some(StreamPosition {
            epoch: epoch.into(),
            offset,
        })
    }

    fn pubs(offsets: impl IntoIterator<Item = u64>) -> Vec<Publication> {
        offsets
            .into_iter()
            .map(|offset| Publication {
                offset,
                data: Payload::null(),
                info: None,
            })
            .collect()
    }

    fn recovery(recovered: bool, offsets: impl IntoIterator<Item = u64>) -> Option<Recovery> {
        Some(Recovery {
            recovered,
            publications: pubs(offsets),
        })
    }

    #[test]
    fn a_first_subscribe_starts_at_the_channel_top_and_takes_the_next_offsets_in_order() {
        let mut s = Subscription::new(None, None);
        let settled = s.settle("e".into(), 7, None);
        assert_eq!(settled.gap, None);
        assert!(!settled.recovered);
        assert_eq!(s.position, pos("e", 7));
        assert_eq!(s.arrive(8), Arrival::Next);
        assert_eq!(s.arrive(8), Arrival::Duplicate);
        assert_eq!(s.arrive(3), Arrival::Duplicate);
        assert_eq!(s.arrive(10), Arrival::Hole { expected: 9 });
        // A hole does not move the position: recovery starts from 8.
        assert_eq!(s.position, pos("e", 8));
        assert_eq!(s.arrive(9), Arrival::Next);
    }

    #[test]
    fn a_recovery_that_continues_the_position_delivers_what_was_missed() {
        let mut s = Subscription::new(pos("e", 4), None);
        let settled = s.settle("e".into(), 6, recovery(true, [5, 6]));
        assert_eq!(
            settled,
            Settled {
                recovered: true,
                publications: pubs([5, 6]),
                gap: None
            }
        );
        assert_eq!(s.position, pos("e", 6));
    }

    #[test]
    fn a_lost_position_or_a_broken_recovery_is_a_gap_and_the_stream_restarts_at_the_top() {
        let cases = [
            (
                pos("e", 4),
                "e2",
                9,
                recovery(false, []),
                GapReason::NotRecovered,
            ),
            (pos("e", 4), "e", 9, None, GapReason::NotRecovered),
            // Recovered, but a hole in the middle, another epoch, or not up
            // to the top: the server broke its word; do not trust it.
            (
                pos("e", 4),
                "e",
                7,
                recovery(true, [5, 7]),
                GapReason::BadRecovery,
            ),
            (
                pos("e", 4),
                "f",
                6,
                recovery(true, [5, 6]),
                GapReason::BadRecovery,
            ),
            (
                pos("e", 4),
                "e",
                9,
                recovery(true, [5, 6]),
                GapReason::BadRecovery,
            ),
        ];
        for (since, epoch, offset, r, reason) in cases {
            let mut s = Subscription::new(since, None);
            let settled = s.settle(epoch.into(), offset, r);
            assert_eq!(settled.gap, Some(reason));
            assert!(settled.publications.is_empty());
            assert_eq!(s.position, pos(epoch, offset));
            assert_eq!(s.arrive(offset + 1), Arrival::Next);
        }
    }

    #[test]
    fn pushes_before_the_reply_are_ignored() {
        let mut s = Subscription::new(pos("e", 1), None);
        assert_eq!(s.arrive(2), Arrival::Ignore);
        assert_eq!(s.position, pos("e", 1));
    }
}
