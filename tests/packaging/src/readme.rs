//! The README's flag tables (`## Configuration`): one Markdown table per binary between
//! `<!-- BEGIN flags NAME -->` and `<!-- END flags NAME -->` markers, rendered from rows
//! the test builds out of each binary's clap definition. Kept free of clap so the rows
//! can come from anywhere (the test crate walks `clap::Command`); this module only
//! renders, finds, compares and rewrites the Markdown.

use std::collections::BTreeSet;

/// One flag as the README documents it. Every field is plain text; rendering adds the
/// backticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagRow {
    /// `--name`, with `, -x` when it also has a short form.
    pub flag: String,
    /// The environment variable (empty: none), with a note such as `(comma-separated)`.
    pub env: String,
    /// The default as the binary shows it (empty: none); several are joined with `, `.
    pub default: String,
    /// The help text, on one line.
    pub what: String,
}

/// The begin and end markers of table `name`.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- BEGIN flags {name} -->"),
        format!("<!-- END flags {name} -->"),
    )
}

/// Escapes what Markdown tables cannot hold literally: `|` and line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `x` in backticks, or nothing for an empty value.
fn code(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("`{}`", cell(s))
    }
}

/// The table (header included, one row per flag, trailing newline).
pub fn render_table(rows: &[FlagRow]) -> String {
    let mut out = String::from("| flag | environment | default | what |\n|---|---|---|---|\n");
    for r in rows {
        let flag = r.flag.split(", ").map(code).collect::<Vec<_>>().join(", ");
        // The env cell may carry a note after the name: `NAME` (note).
        let env = match r.env.split_once(' ') {
            Some((name, note)) => format!("{} {}", code(name), cell(note)),
            None => code(&r.env),
        };
        out.push_str(&format!(
            "| {flag} | {env} | {} | {} |\n",
            code(&r.default),
            cell(&r.what)
        ));
    }
    out
}

/// The text between the markers of table `name` (markers excluded, leading and trailing
/// blank lines trimmed), or `None` when either marker is missing.
pub fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let (begin, end) = markers(name);
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    Some(text[start..stop].trim_matches('\n'))
}

/// `text` with the table `name` replaced by `table`, or `None` when a marker is missing.
pub fn replace_section(text: &str, name: &str, table: &str) -> Option<String> {
    let (begin, end) = markers(name);
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    Some(format!(
        "{}\n{}\n{}",
        &text[..start],
        table.trim_matches('\n'),
        &text[stop..]
    ))
}

/// The flag names (`--x`) of a rendered table's rows, for readable failure messages.
pub fn table_flags(table: &str) -> BTreeSet<String> {
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .filter_map(|l| l.split('`').next())
        .map(|f| format!("--{f}"))
        .collect()
}

/// Lines of `table` that `expected` lacks and the other way round, prefixed `-` (in the
/// README only) and `+` (what the binary says).
pub fn line_diff(readme: &str, expected: &str) -> Vec<String> {
    let have: BTreeSet<&str> = readme.lines().collect();
    let want: BTreeSet<&str> = expected.lines().collect();
    let mut out: Vec<String> = have.difference(&want).map(|l| format!("- {l}")).collect();
    out.extend(want.difference(&have).map(|l| format!("+ {l}")));
    out
}

/// Every `--flag` the text mentions outside fenced code blocks.
pub fn flag_mentions(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("--") {
            let after = &rest[i + 2..];
            let len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                .unwrap_or(after.len());
            let name = after[..len].trim_end_matches('-');
            let starts_word = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric());
            if starts_word && name.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.insert(format!("--{name}"));
            }
            rest = &after[len..];
        }
    }
    out
}

/// The `## NAME` section of a Markdown text (heading line included), up to the next
/// heading of the same level.
pub fn chapter<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let head = format!("\n## {heading}\n");
    let start = text.find(&head)? + 1;
    let body = &text[start + head.len() - 1..];
    let len = body.find("\n## ").map_or(body.len(), |i| i + 1);
    Some(&text[start..start + head.len() - 1 + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(flag: &str, env: &str, default: &str, what: &str) -> FlagRow {
        FlagRow {
            flag: flag.into(),
            env: env.into(),
            default: default.into(),
            what: what.into(),
        }
    }

    #[test]
    fn tables_render_escape_and_replace_between_markers() {
        let t = render_table(&[
            row("--a", "VCLINK_A (comma-separated)", "x", "One | two"),
            row("--namespace, -n", "", "", "Only this"),
        ]);
        assert!(
            t.contains("| `--a` | `VCLINK_A` (comma-separated) | `x` | One \\| two |"),
            "{t}"
        );
        assert!(
            t.contains("| `--namespace`, `-n` |  |  | Only this |"),
            "{t}"
        );
        let doc = "intro\n<!-- BEGIN flags t -->\nold\n<!-- END flags t -->\nafter\n";
        assert_eq!(section(doc, "t"), Some("old"));
        let new = replace_section(doc, "t", &t).expect("markers");
        assert_eq!(section(&new, "t"), Some(t.trim_end()));
        assert!(new.ends_with("<!-- END flags t -->\nafter\n"));
        assert_eq!(section("no markers", "t"), None);
        assert_eq!(
            table_flags(&t),
            BTreeSet::from(["--a".to_string(), "--namespace".to_string()])
        );
    }

    #[test]
    fn mentions_skip_code_blocks_and_dashes_inside_words() {
        let text = "Use `--kube-qps`, not --x-.\n```sh\ncargo test --workspace\n```\nwell--known and --- rules";
        assert_eq!(
            flag_mentions(text),
            BTreeSet::from(["--kube-qps".to_string(), "--x".to_string()])
        );
    }

    #[test]
    fn a_chapter_ends_at_the_next_heading_of_its_level() {
        let text = "# T\n\n## A\na\n### sub\ns\n## B\nb\n";
        assert_eq!(chapter(text, "A"), Some("## A\na\n### sub\ns\n"));
        assert_eq!(chapter(text, "B"), Some("## B\nb\n"));
        assert_eq!(chapter(text, "C"), None);
    }
}
