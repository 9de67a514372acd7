//! `wavecast-model check --servers N --clients M --depth D [--threads T]
//! [--cuts K] [--lose SERVER] [--silent CLIENT] [--auth] [--mutation NAME]`: explores a
//! topology (see `Config::standard`; `--auth`: `Config::auth`, with
//! `--servers` only) and prints the state counts and every discovery.

use std::process::ExitCode;
use std::time::Instant;

use wavecast_model::{check, Config};

fn usage() -> ExitCode {
    eprintln!(
        "usage: wavecast-model check [--servers N] [--clients M] [--depth D] \
         [--threads T] [--cuts K] [--lose SERVER] [--silent CLIENT] [--auth] [--mutation NAME]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("check") {
        return usage();
    }
    let (mut servers, mut clients, mut depth, mut threads, mut cuts) = (2, 3, 20, 2, 1u8);
    let mut mutation: Option<String> = None;
    let mut lose: Option<usize> = None;
    let mut silent: Option<usize> = None;
    let mut auth = false;
    let mut it = args.iter().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--auth" {
            auth = true;
            continue;
        }
        let Some(value) = it.next() else {
            return usage();
        };
        let n = value.parse::<usize>();
        match (flag.as_str(), n) {
            ("--servers", Ok(n)) => servers = n.max(1),
            ("--clients", Ok(n)) => clients = n,
            ("--depth", Ok(n)) => depth = n,
            ("--threads", Ok(n)) => threads = n.max(1),
            ("--cuts", Ok(n)) => cuts = u8::try_from(n).unwrap_or(u8::MAX),
            ("--lose", Ok(n)) => lose = Some(n),
            ("--silent", Ok(n)) => silent = Some(n),
            ("--mutation", _) => mutation = Some(value.clone()),
            _ => return usage(),
        }
    }
    let mut cfg = if auth {
        Config::auth(servers)
    } else {
        let mut cfg = Config::standard(servers, clients);
        cfg.cuts[0] = cuts;
        cfg
    };
    cfg.lose_first_pub_to = lose;
    if let Some(script) = silent.and_then(|i| cfg.clients.get_mut(i)) {
        script.silent = true;
    }
    if let Some(name) = mutation {
        match plant(&name) {
            Some(setup) => cfg.setup_node = Some(setup),
            None => {
                eprintln!("unknown mutation {name:?} (or built without --features mutations)");
                return ExitCode::from(2);
            }
        }
    }
    let channels: std::collections::BTreeSet<u8> = cfg
        .clients
        .iter()
        .flat_map(|c| c.subscribe.iter().chain(&c.publish).copied())
        .collect();
    println!(
        "checking {} servers, 1 backbone, {} clients, {} channels{}, depth {depth}",
        cfg.servers,
        cfg.clients.len(),
        channels.len(),
        if cfg.auth { ", authenticating" } else { "" }
    );
    let start = Instant::now();
    let outcome = check(cfg, depth, threads);
    println!(
        "{} unique states ({} generated), max depth {}, {:.1?}",
        outcome.unique_states,
        outcome.states,
        outcome.max_depth,
        start.elapsed()
    );
    let mut failed = false;
    for name in &outcome.always {
        match outcome.discoveries.get(name) {
            Some(path) => {
                failed = true;
                println!("ALWAYS {name:?}: VIOLATED\n{path}");
            }
            None => println!("always {name:?}: holds"),
        }
    }
    for name in &outcome.sometimes {
        let found = outcome.discoveries.contains_key(name);
        println!(
            "sometimes {name:?}: {}",
            if found { "witnessed" } else { "NOT reached" }
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(feature = "mutations")]
fn plant(name: &str) -> Option<fn(&mut wavecast_core::node::Node)> {
    use wavecast_core::node::{Mutation, Node};
    let f: fn(&mut Node) = match name {
        "SkipUnsubscribeOnClose" => |n| n.set_mutation(Mutation::SkipUnsubscribeOnClose),
        "IgnoreGap" => |n| n.set_mutation(Mutation::IgnoreGap),
        "KeepBackboneSubscription" => |n| n.set_mutation(Mutation::KeepBackboneSubscription),
        "DeliverLocalDirectly" => |n| n.set_mutation(Mutation::DeliverLocalDirectly),
        "SkipSubscribePermission" => |n| n.set_mutation(Mutation::SkipSubscribePermission),
        _ => return None,
    };
    Some(f)
}

#[cfg(not(feature = "mutations"))]
fn plant(_name: &str) -> Option<fn(&mut wavecast_core::node::Node)> {
    None
}
