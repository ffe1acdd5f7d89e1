//! The README's "Configuration" tables say what the binaries accept: every visible flag of
//! `vclink-hub`, `vclink-agent run` and `vclink-agent status` appears with its environment
//! variable, its default and its help text, and the tables list nothing else. The rows
//! are built from the binaries' own clap definitions (hidden, deprecated flags stay out).
//!
//! `VCLINK_UPDATE_README=1 cargo test -p vclink-packaging-tests --test readme_flags`
//! rewrites the tables between their markers; otherwise a difference fails, showing the
//! lines to change.

use std::collections::BTreeSet;

use clap::CommandFactory;
use vclink_packaging_tests::readme::{
    FlagRow, chapter, flag_mentions, line_diff, render_table, replace_section, section, table_flags,
};
use vclink_packaging_tests::repo_root;

/// Help text on one line: paragraphs and wrapped lines joined with single spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The rows of one command's visible flags, in declaration order, as `--help` shows them.
fn rows(cmd: &clap::Command) -> Vec<FlagRow> {
    let mut cmd = cmd.clone();
    cmd.build();
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .filter_map(|a| {
            let long = a.get_long()?;
            let flag = match a.get_short() {
                Some(s) => format!("--{long}, -{s}"),
                None => format!("--{long}"),
            };
            let takes_values = a.get_action().takes_values();
            let env = match a.get_env() {
                Some(e) if !a.is_hide_env_set() => {
                    let name = e.to_string_lossy().into_owned();
                    if a.get_value_delimiter().is_some() {
                        format!("{name} (comma-separated)")
                    } else {
                        name
                    }
                }
                _ => String::new(),
            };
            // As clap's help: no default shown for switches that take no value.
            let default = if takes_values && !a.is_hide_default_value_set() {
                a.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                String::new()
            };
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| one_line(&h.to_string()))
                .unwrap_or_default();
            let possible: Vec<String> = if takes_values && !a.is_hide_possible_values_set() {
                a.get_possible_values()
                    .iter()
                    .filter(|p| !p.is_hide_set())
                    .map(|p| format!("`{}`", p.get_name()))
                    .collect()
            } else {
                Vec::new()
            };
            let what = if possible.is_empty() {
                help
            } else {
                format!("{help} ({})", possible.join(", "))
            };
            Some(FlagRow {
                flag,
                env,
                default,
                what,
            })
        })
        .collect()
}

fn subcommand(name: &str) -> clap::Command {
    vclink_agent::config::command()
        .find_subcommand(name)
        .unwrap_or_else(|| panic!("vclink-agent has a `{name}` subcommand"))
        .clone()
}

/// Table name (its markers) and the command it documents.
fn tables() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("vclink-hub", vclink_hub::config::Args::command()),
        ("vclink-agent run", subcommand("run")),
        ("vclink-agent status", subcommand("status")),
    ]
}

/// Every long flag of every command of both binaries, hidden ones included (the README
/// may name a deprecated flag to say it is ignored).
fn all_flags() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![
        vclink_hub::config::Args::command(),
        vclink_agent::config::command(),
    ];
    while let Some(mut cmd) = stack.pop() {
        cmd.build();
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_long())
                .map(|l| format!("--{l}")),
        );
        stack.extend(cmd.get_subcommands().cloned());
    }
    out
}

#[test]
fn the_readme_tables_are_the_binaries_flags() {
    let path = repo_root().join("README.md");
    let mut text = std::fs::read_to_string(&path).expect("README.md");
    let update = std::env::var("VCLINK_UPDATE_README").is_ok_and(|v| v == "1");
    let mut problems = Vec::new();
    for (name, cmd) in tables() {
        let rows = rows(&cmd);
        assert!(rows.len() >= 2, "{name}: no flags found");
        let expected = render_table(&rows);
        let Some(found) = section(&text, name) else {
            problems.push(format!(
                "README.md has no table `{name}`: add the lines <!-- BEGIN flags {name} --> and \
                 <!-- END flags {name} --> under ## Configuration, then run with VCLINK_UPDATE_README=1"
            ));
            continue;
        };
        if found == expected.trim_end() {
            continue;
        }
        if update {
            text = replace_section(&text, name, &expected).expect("markers were found");
            continue;
        }
        let (have, want) = (table_flags(found), table_flags(&expected));
        let mut msg = format!("README table `{name}` differs from the binary:\n");
        for f in want.difference(&have) {
            msg.push_str(&format!("  missing flag {f}\n"));
        }
        for f in have.difference(&want) {
            msg.push_str(&format!("  the binary has no (visible) flag {f}\n"));
        }
        for l in line_diff(found, &expected) {
            msg.push_str(&format!("  {l}\n"));
        }
        problems.push(msg);
    }
    if update {
        std::fs::write(&path, &text).expect("write README.md");
    }
    assert!(
        problems.is_empty(),
        "{}\nRegenerate: VCLINK_UPDATE_README=1 cargo test -p vclink-packaging-tests --test readme_flags \
         (the text comes from the flags' help; change it there)",
        problems.join("\n")
    );
}

#[test]
fn the_configuration_chapter_names_only_real_flags() {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let config = chapter(&text, "Configuration").expect("README has ## Configuration");
    let known = all_flags();
    let unknown: Vec<String> = flag_mentions(config)
        .into_iter()
        // `--help`, and cargo's `--test` in the regeneration command.
        .filter(|f| !known.contains(f) && f != "--help" && f != "--test")
        .collect();
    assert!(
        unknown.is_empty(),
        "README ## Configuration names flags neither binary has: {unknown:?}"
    );
}
