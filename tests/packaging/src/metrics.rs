//! The Prometheus metric names the vclink binaries export, read from their sources by
//! pattern (not fixed paths, so modules can move): every `Registry::with_prefix("…")`
//! gives a crate's prefix, every `.register("name", help, metric)` call a metric whose
//! type (counter, gauge, histogram) comes from the declaration of `metric` in the same
//! file, and every hand-written `# TYPE name kind` line in a string literal a metric
//! served without the registry. The exported names follow prometheus-client's text
//! encoding: counters get `_total`, histograms `_bucket`, `_sum` and `_count`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why the sources could not be read as expected.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Reads one string literal starting at `s[0] == '"'`; returns (content, rest).
fn string_literal(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some((out, &s[i + 1..]));
        } else {
            out.push(c);
        }
    }
    None
}

/// Splits the text after `register(` into its top-level arguments.
fn call_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for c in s.chars() {
        if in_str {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                cur.push(c);
            }
            '(' | '[' | '{' | '<' => {
                depth += 1;
                cur.push(c);
            }
            ')' | ']' | '}' | '>' if depth == 0 => break,
            ')' | ']' | '}' | '>' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => args.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    args.push(cur);
    args.into_iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// The metric kind of variable/field `ident` from its declaration in `text`.
fn kind_of(text: &str, ident: &str) -> Option<&'static str> {
    for decl in [format!("let {ident} = "), format!("{ident}: ")] {
        for (pos, _) in text.match_indices(&decl) {
            let rest = &text[pos + decl.len()..];
            let line = rest.lines().next().unwrap_or("");
            for (needle, kind) in [
                ("Histogram", "histogram"),
                ("Counter", "counter"),
                ("Gauge", "gauge"),
            ] {
                if line.contains(needle) {
                    return Some(kind);
                }
            }
        }
    }
    None
}

/// Exported names of one crate's sources (`src_dir`).
pub fn exported_names(src_dir: &Path) -> Result<BTreeSet<String>, MetricsError> {
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    files.sort();
    let mut texts = Vec::new();
    for f in &files {
        let t = std::fs::read_to_string(f).map_err(|e| MetricsError::Io {
            path: f.display().to_string(),
            source: e,
        })?;
        texts.push((f.clone(), t));
    }
    let prefixes: BTreeSet<String> = texts
        .iter()
        .flat_map(|(_, t)| {
            t.match_indices("Registry::with_prefix(")
                .map(move |(p, m)| &t[p + m.len()..])
        })
        .filter_map(|rest| string_literal(rest.trim_start()).map(|(s, _)| s))
        .collect();
    let mut out = BTreeSet::new();
    for (file, text) in &texts {
        for (pos, m) in text.match_indices(".register(") {
            let args = call_args(&text[pos + m.len()..]);
            let Some((name, _)) = args.first().and_then(|a| string_literal(a)) else {
                continue;
            };
            let prefix = match prefixes.len() {
                1 => prefixes.iter().next().cloned().unwrap_or_default(),
                n => {
                    return Err(MetricsError::Parse(format!(
                        "{} registers {name:?} but its crate has {n} registry prefixes {prefixes:?}",
                        file.display()
                    )));
                }
            };
            let metric = args.get(2).cloned().unwrap_or_default();
            let ident = metric
                .trim_start_matches("self.")
                .split(['.', '('])
                .next()
                .unwrap_or("")
                .to_string();
            let kind = kind_of(text, &ident).ok_or_else(|| {
                MetricsError::Parse(format!(
                    "{}: cannot tell the type of {metric} (metric {name})",
                    file.display()
                ))
            })?;
            let full = format!("{prefix}_{name}");
            match kind {
                "counter" => {
                    out.insert(format!("{full}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{full}{s}"));
                    }
                }
                _ => {
                    out.insert(full);
                }
            }
        }
        for (pos, m) in text.match_indices("# TYPE ") {
            let mut words = text[pos + m.len()..].split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                let kind = kind.trim_end_matches("\\n");
                if name.starts_with("vclink_") {
                    match kind {
                        "counter" => {
                            out.insert(format!("{}_total", name.trim_end_matches("_total")))
                        }
                        _ => out.insert(name.to_string()),
                    };
                }
            }
        }
    }
    Ok(out)
}

/// Metric names (`vclink_…`) a PromQL expression refers to.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("vclink_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_become_exported_names() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("m.rs"),
            "let mut registry = Registry::with_prefix(\"vclink_x\");\nlet a = Counter::default();\nregistry.register(\"a\", \"help, with comma\", a.clone());\n\
             let h = Histogram::new([1.0]);\nregistry.register(\n  \"lat_seconds\",\n  HELP,\n  h.clone(),\n);\npub g: Family<L, Gauge>,\nr.register(\"g\", \"x\", self.g.clone());\n\
             let s = \"# TYPE vclink_y_up gauge\\n\";",
        )
        .expect("write");
        let names = exported_names(dir.path()).expect("names");
        let want: BTreeSet<String> = [
            "vclink_x_a_total",
            "vclink_x_lat_seconds_bucket",
            "vclink_x_lat_seconds_sum",
            "vclink_x_lat_seconds_count",
            "vclink_x_g",
            "vclink_y_up",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn promql_names() {
        let n = promql_metric_names(
            "histogram_quantile(0.9, sum by (le) (rate(vclink_hub_x_bucket[5m]))) / vclink_a",
        );
        assert_eq!(
            n.into_iter().collect::<Vec<_>>(),
            vec!["vclink_a", "vclink_hub_x_bucket"]
        );
    }
}
