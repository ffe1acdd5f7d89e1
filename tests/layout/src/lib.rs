//! A check of the module graph of the hub and the agent, run by `cargo test`: no import
//! circle among a crate's top-level modules or among the files of any folder, and the
//! hub's layering (`core` uses no other module, `grpc` does not use `rancher`, `rancher`
//! does not use `state`). [`tree`] reads a crate's sources into modules and references;
//! [`graph`] builds the graph among one folder's children and finds cycles. A circle
//! between modules means neither can be read, tested or changed without the other;
//! this check keeps one from coming back unnoticed.
#![forbid(unsafe_code)]

pub mod graph;
pub mod tree;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

pub use graph::Graph;
pub use tree::{Crate, Disk, LayoutError, ModPath, Reference, Source};

/// Every import circle in `krate`: one message per group of modules that reach each
/// other, in every folder.
pub fn cycles(krate: &Crate) -> Vec<String> {
    krate
        .folders()
        .iter()
        .flat_map(|folder| {
            let g = krate.graph(folder);
            g.cycles()
                .into_iter()
                .map(|(members, c)| {
                    format!(
                        "import circle among the children of {}: {} (modules that reach each other: {})",
                        g.name(),
                        g.explain(&c),
                        members.join(", ")
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A layering rule among a crate's top-level modules: `from` uses none of `forbidden`
/// (`None`: no other module at all).
pub struct Rule {
    /// The module the rule is about.
    pub from: &'static str,
    /// The modules it must not use; `None` forbids every other module of the crate.
    pub forbidden: Option<&'static [&'static str]>,
}

/// What checking the rules found: broken rules, and rules skipped because a module
/// they name does not exist (yet).
#[derive(Debug, Default)]
pub struct RuleReport {
    /// One message per broken rule, with the references that break it.
    pub broken: Vec<String>,
    /// One note per skipped rule.
    pub skipped: Vec<String>,
}

/// Checks `rules` against the top-level graph of `krate`.
pub fn check_rules(krate: &Crate, rules: &[Rule]) -> RuleReport {
    let g = krate.graph(&[]);
    let mut report = RuleReport::default();
    for rule in rules {
        let named = std::iter::once(rule.from).chain(rule.forbidden.unwrap_or(&[]).iter().copied());
        let missing: Vec<&str> = named.filter(|m| !g.nodes.contains(*m)).collect();
        let text = match rule.forbidden {
            None => format!("`{}` uses no other module", rule.from),
            Some(f) => format!(
                "`{}` does not use {}",
                rule.from,
                f.iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if !missing.is_empty() {
            report.skipped.push(format!(
                "rule {text}: skipped, no module {}",
                missing.join(", ")
            ));
            continue;
        }
        let bad: Vec<&str> = g
            .uses(rule.from)
            .into_iter()
            .filter(|to| rule.forbidden.is_none_or(|f| f.contains(to)))
            .collect();
        if bad.is_empty() {
            continue;
        }
        let mut msg = format!("rule {text} is broken:");
        for to in bad {
            for r in &g.edges[&(rule.from.to_string(), to.to_string())] {
                let _ = write!(msg, "\n    {} uses `{}`", r.file.display(), r.text);
            }
        }
        report.broken.push(msg);
    }
    report
}
