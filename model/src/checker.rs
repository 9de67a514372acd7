//! Runs stateright's breadth-first checker over a [`Config`]'s model and
//! renders each discovery's path as readable steps.

use std::sync::Arc;

use stateright::actor::{ActorModel, Id};
use stateright::{Checker, Expectation, Model};

use crate::properties::{
    client_violations, leaks, missing_deliveries, order_conflicts, servers, token_violations,
    unpermitted_deliveries, ModelState,
};
use crate::{Actor, Config, Msg, Opaque, Outcome};

pub(crate) fn run(cfg: Config, depth: usize, threads: usize, stop_at_failure: bool) -> Outcome {
    let model = cfg.into_model();
    let props = model.properties();
    let always = props
        .iter()
        .filter(|p| p.expectation == Expectation::Always)
        .map(|p| p.name)
        .collect();
    let sometimes = props
        .iter()
        .filter(|p| p.expectation == Expectation::Sometimes)
        .map(|p| p.name)
        .collect();
    let mut checker = model.checker().threads(threads);
    if depth > 0 {
        checker = checker.target_max_depth(depth);
    }
    if stop_at_failure {
        checker = checker.finish_when(stateright::HasDiscoveries::AnyFailures);
    }
    let checker = checker.spawn_bfs().join();
    let discoveries = checker
        .discoveries()
        .into_iter()
        .map(|(name, path)| (name, format_path(checker.model(), path)))
        .collect();
    Outcome {
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        max_depth: checker.max_depth(),
        discoveries,
        always,
        sometimes,
    }
}

/// A path as readable steps: each action, then what the last state
/// violates.
fn format_path(
    model: &ActorModel<Actor, Config, ()>,
    path: stateright::Path<ModelState, <ActorModel<Actor, Config, ()> as Model>::Action>,
) -> String {
    let mut out = String::new();
    let last = Arc::new(path.last_state().clone());
    for (n, action) in path.into_actions().into_iter().enumerate() {
        out.push_str(&format!("{:3}. {}\n", n + 1, describe(model, &action)));
    }
    let late =
        servers(&last).flat_map(|(i, s)| s.t.late.iter().map(move |l| format!("server {i}: {l}")));
    for v in client_violations(&last)
        .into_iter()
        .chain(order_conflicts(&last))
        .chain(late.collect::<Vec<_>>())
        .chain(unpermitted_deliveries(&model.cfg, &last))
        .chain(token_violations(&last))
        .chain(missing_deliveries(&last))
        .chain(leaks(&model.cfg, &last))
    {
        out.push_str(&format!("  => {v}\n"));
    }
    out
}

fn actor_name(cfg: &Config, id: Id) -> String {
    let i = usize::from(id);
    if i < cfg.servers {
        format!("server{i}")
    } else if i == cfg.servers {
        "backbone".into()
    } else {
        format!("client{}", i - cfg.servers - 1)
    }
}

fn describe(
    model: &ActorModel<Actor, Config, ()>,
    action: &<ActorModel<Actor, Config, ()> as Model>::Action,
) -> String {
    use stateright::actor::ActorModelAction as A;
    let cfg = &model.cfg;
    match action {
        A::Deliver { src, dst, msg } => {
            let msg = match msg {
                Msg::Cmd(Opaque(c)) => format!("{c:?}"),
                Msg::Ev(Opaque(e)) => format!("{e:?}"),
                m => format!("{m:?}"),
            };
            format!(
                "{} -> {}: {msg}",
                actor_name(cfg, *src),
                actor_name(cfg, *dst)
            )
        }
        A::Timeout(id, t) => format!("{} does {t:?}", actor_name(cfg, *id)),
        other => format!("{other:?}"),
    }
}
