//! The module-graph check of the workspace's own crates: no import circle in the hub or
//! the agent (top-level modules, and the files of every folder), and the hub's layering.
//! A rule about a module that does not exist is reported as skipped, not as passed.

use std::path::PathBuf;

use vclink_layout_tests::{Crate, Disk, Rule, check_rules, cycles};

fn load(krate: &str) -> Crate {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(krate)
        .join("src");
    let c = Crate::load(&src, &Disk).unwrap_or_else(|e| panic!("reading {krate}: {e}"));
    // A reader that found nothing would pass every check below.
    let g = c.graph(&[]);
    assert!(
        g.nodes.len() >= 5 && !g.edges.is_empty(),
        "{krate}: found only {:?} with {} edges; is the reader broken?",
        g.nodes,
        g.edges.len()
    );
    println!(
        "{krate}: {} modules; top level: {}",
        c.modules.len(),
        g.edges
            .keys()
            .map(|(a, b)| format!("{a}->{b}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    c
}

#[test]
fn agent_has_no_import_circle() {
    let found = cycles(&load("agent"));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn hub_has_no_import_circle() {
    let found = cycles(&load("hub"));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn hub_layering() {
    let rules = [
        // The pure core: decisions and indexes with no kube, no gRPC, no shared state.
        Rule {
            from: "core",
            forbidden: None,
        },
        // The agent edge does not know Rancher's kinds.
        Rule {
            from: "grpc",
            forbidden: Some(&["rancher"]),
        },
        // The Rancher adapter never sees the hub's shared state.
        Rule {
            from: "rancher",
            forbidden: Some(&["state"]),
        },
    ];
    let report = check_rules(&load("hub"), &rules);
    for note in &report.skipped {
        println!("NOTE: {note}");
    }
    assert!(report.broken.is_empty(), "{}", report.broken.join("\n"));
}
