//! The model checks of `cargo test -p wavecast-model`: the standard
//! topology (2 servers, 1 backbone, 3 clients, 2 channels) on the real
//! core, its lossy and silent variants, the authenticating topology, and
//! each of core's planted mutations caught with a counterexample (printed;
//! run with `--nocapture` to read it).

use wavecast_core::node::{Mutation, Node};
use wavecast_model::{check, find_violation, Config, Outcome};

/// BFS depth of the standard check: deep enough that every `Sometimes`
/// witness is reached (a publication reaching two servers takes about 20
/// steps).
const DEPTH: usize = 20;

/// Unique states of the standard check at `DEPTH`. A change to the model
/// or to the core that shrinks (or grows) the explored space shows here;
/// update it deliberately, with the figure in docs/MODEL.md.
const STANDARD_STATES: usize = 256_412;

/// Unique states of the lossy topology (a publication to server 1 lost,
/// no link cut) at `DEPTH`.
const LOSSY_STATES: usize = 51_546;

/// Unique states of the silent topology (client 0 goes silent once
/// subscribed, no link cut) at `DEPTH`.
const SILENT_STATES: usize = 88_753;

/// Unique states of the authenticating topology (`Config::auth(2)`),
/// explored to the end (no depth bound; its deepest path is 37 steps).
const AUTH_STATES: usize = 126_331;

const HEARTBEAT_EXPIRY: &str = "a silent peer dropped by the heartbeat";
const ONE_ORDER: &str = "one order, no duplicates, no silent gap, exact recovery";
const NO_LEAKS: &str = "quiescent: no leaks";
const UNPERMITTED: &str = "auth: no publication of a channel the connection may not subscribe to";

fn lossy() -> Config {
    let mut cfg = Config::standard(2, 3);
    cfg.cuts = vec![0, 0];
    cfg.lose_first_pub_to = Some(1);
    cfg
}

fn print(outcome: &Outcome) {
    println!(
        "{} unique states, {} generated, max depth {}",
        outcome.unique_states, outcome.states, outcome.max_depth
    );
    for (name, path) in &outcome.discoveries {
        println!("discovery {name:?}:\n{path}");
    }
}

fn assert_holds(outcome: &Outcome) {
    for name in &outcome.always {
        assert!(
            !outcome.discoveries.contains_key(name),
            "{name:?} violated:\n{}",
            outcome.discoveries[name]
        );
    }
}

#[test]
fn standard_topology_keeps_the_delivery_contract() {
    let outcome = check(Config::standard(2, 3), DEPTH, 2);
    print(&outcome);
    assert_holds(&outcome);
    // No client goes silent here: the heartbeat has its own check.
    for name in outcome.sometimes.iter().filter(|n| **n != HEARTBEAT_EXPIRY) {
        assert!(
            outcome.discoveries.contains_key(name),
            "{name:?} never witnessed within depth {DEPTH}"
        );
    }
    assert_eq!(outcome.max_depth, DEPTH);
    assert_eq!(outcome.unique_states, STANDARD_STATES);
}

#[test]
fn lost_publication_is_filled_from_history() {
    let outcome = check(lossy(), DEPTH, 2);
    print(&outcome);
    assert_holds(&outcome);
    assert_eq!(outcome.unique_states, LOSSY_STATES);
}

#[test]
fn silent_client_is_dropped_by_the_heartbeat() {
    let mut cfg = Config::standard(2, 3);
    cfg.cuts = vec![0, 0];
    cfg.clients[0].silent = true;
    let outcome = check(cfg, DEPTH, 2);
    print(&outcome);
    assert_holds(&outcome);
    for name in &outcome.sometimes {
        assert!(
            outcome.discoveries.contains_key(name),
            "{name:?} never witnessed within depth {DEPTH}"
        );
    }
    assert_eq!(outcome.unique_states, SILENT_STATES);
}

#[test]
fn authorization_and_token_expiry_hold() {
    let outcome = check(Config::auth(2), 0, 2);
    print(&outcome);
    assert_holds(&outcome);
    let auth: Vec<_> = outcome
        .sometimes
        .iter()
        .filter(|n| n.starts_with("auth:"))
        .collect();
    assert_eq!(auth.len(), 4);
    for name in auth {
        assert!(
            outcome.discoveries.contains_key(name),
            "{name:?} never witnessed"
        );
    }
    assert_eq!(outcome.unique_states, AUTH_STATES);
}

/// Checks `cfg` with `mutation` planted in every node and returns the
/// counterexample found for `property`.
fn caught(cfg: Config, mutation: fn(&mut Node), property: &str) -> String {
    let mut cfg = cfg;
    cfg.setup_node = Some(mutation);
    let outcome = find_violation(cfg, DEPTH, 2);
    print(&outcome);
    let Some(path) = outcome.discoveries.get(property) else {
        panic!("no counterexample to {property:?} within depth {DEPTH}");
    };
    path.clone()
}

#[test]
fn skip_unsubscribe_on_close_is_caught() {
    let path = caught(
        Config::standard(2, 3),
        |n| n.set_mutation(Mutation::SkipUnsubscribeOnClose),
        NO_LEAKS,
    );
    assert!(path.contains("Disconnect"), "{path}");
    assert!(path.contains("0 clients subscribed"), "{path}");
}

#[test]
fn keep_backbone_subscription_is_caught() {
    let path = caught(
        Config::standard(2, 3),
        |n| n.set_mutation(Mutation::KeepBackboneSubscription),
        NO_LEAKS,
    );
    assert!(path.contains("backbone subscriptions"), "{path}");
}

#[test]
fn ignore_gap_is_caught() {
    let path = caught(lossy(), |n| n.set_mutation(Mutation::IgnoreGap), ONE_ORDER);
    assert!(path.contains("silent gap"), "{path}");
}

#[test]
fn deliver_local_directly_is_caught() {
    let path = caught(
        Config::standard(2, 3),
        |n| n.set_mutation(Mutation::DeliverLocalDirectly),
        ONE_ORDER,
    );
    assert!(path.contains("got data"), "{path}");
}

#[test]
fn skip_subscribe_permission_is_caught() {
    let path = caught(
        Config::auth(2),
        |n| n.set_mutation(Mutation::SkipSubscribePermission),
        UNPERMITTED,
    );
    assert!(path.contains("Subscribed { conn: 0, ch: 2"), "{path}");
    assert!(path.contains("a channel it may not subscribe to"), "{path}");
}
