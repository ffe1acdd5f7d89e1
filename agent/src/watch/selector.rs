//! A Kubernetes label selector (`--namespace-selector`) parsed once and evaluated in
//! memory. The namespace watch is unfiltered on purpose: a namespace that stops matching
//! must be seen as "no longer selected" (its vClusters excluded, their Rancher clusters
//! kept), not as deleted, which is what a selector-filtered watch would report.
//!
//! Grammar (as `kubectl -l`): comma-separated requirements, each `key`, `!key`,
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)` or `key notin (a,b)`.

use std::collections::{BTreeMap, BTreeSet};

/// Why a selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct BadSelector {
    /// The selector as given.
    pub selector: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    text: String,
    requirements: Vec<Requirement>,
}

fn valid_key(k: &str) -> bool {
    let name = k.rsplit_once('/').map_or(k, |(_, n)| n);
    !name.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl LabelSelector {
    /// Parses `text`; an empty selector selects everything.
    pub fn parse(text: &str) -> Result<Self, BadSelector> {
        let bad = |reason: &str| BadSelector {
            selector: text.to_string(),
            reason: reason.to_string(),
        };
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self {
                text: String::new(),
                requirements,
            });
        }
        for part in split_top(text) {
            let part = part.trim();
            let set_op = [(" notin ", false), (" in ", true)]
                .into_iter()
                .find_map(|(op, is_in)| part.split_once(op).map(|(k, v)| (k, v, is_in)));
            let req = if let Some((key, values, is_in)) = set_op {
                let key = key.trim();
                let values = values
                    .trim()
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| bad("a set must be written (a,b)"))?;
                let values: BTreeSet<String> =
                    values.split(',').map(|v| v.trim().to_string()).collect();
                if !valid_key(key) || !values.iter().all(|v| valid_value(v)) {
                    return Err(bad("malformed key or value"));
                }
                if is_in {
                    Requirement::In(key.into(), values)
                } else {
                    Requirement::NotIn(key.into(), values)
                }
            } else if let Some((key, value)) = part.split_once("!=") {
                let (key, value) = (key.trim(), value.trim());
                if !valid_key(key) || !valid_value(value) {
                    return Err(bad("malformed key or value"));
                }
                Requirement::NotIn(key.into(), BTreeSet::from([value.to_string()]))
            } else if let Some((key, value)) = part.split_once('=') {
                let value = value.strip_prefix('=').unwrap_or(value);
                let (key, value) = (key.trim(), value.trim());
                if !valid_key(key) || !valid_value(value) {
                    return Err(bad("malformed key or value"));
                }
                Requirement::In(key.into(), BTreeSet::from([value.to_string()]))
            } else if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                if !valid_key(key) {
                    return Err(bad("malformed key"));
                }
                Requirement::NotExists(key.into())
            } else {
                if !valid_key(part) {
                    return Err(bad("malformed key"));
                }
                Requirement::Exists(part.into())
            };
            requirements.push(req);
        }
        Ok(Self {
            text: text.trim().to_string(),
            requirements,
        })
    }

    /// Whether a namespace with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }

    /// The selector as given (for messages).
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_existence() {
        let s = LabelSelector::parse("vclink.io/import=true,team").expect("parse");
        assert!(s.matches(&labels(&[("vclink.io/import", "true"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("vclink.io/import", "false"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("vclink.io/import", "true")])));
        let s = LabelSelector::parse("env==prod, !legacy").expect("parse");
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("legacy", "")])));
    }

    #[test]
    fn inequality_and_sets() {
        let s = LabelSelector::parse("env!=dev,tier in (a, b),zone notin (x)").expect("parse");
        assert!(s.matches(&labels(&[("tier", "a")])));
        assert!(s.matches(&labels(&[("tier", "b"), ("zone", "y"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("tier", "c")])));
        assert!(!s.matches(&labels(&[("tier", "a"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("tier", "a"), ("zone", "x")])));
    }

    #[test]
    fn empty_selects_all_and_garbage_is_refused() {
        assert!(
            LabelSelector::parse("")
                .expect("parse")
                .matches(&BTreeMap::new())
        );
        for bad in ["a=b=c d", "x in a,b", "=v", "k=(v)", "a b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }
}
