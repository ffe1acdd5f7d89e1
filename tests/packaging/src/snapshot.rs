//! Snapshots of rendered charts under `tests/packaging/rendered/`: the text Helm produced
//! (comments included, so reviewers read each RBAC rule with its reason), with the only
//! non-deterministic part — key material from `genCA`/`genSignedCert` — masked.
//! `VCLINK_UPDATE_SNAPSHOTS=1` rewrites them; otherwise any difference fails.

use std::path::Path;

use crate::{Case, ChartError, Rendered, Result};

/// Marker the hub chart puts on the Secret whose data Helm generates.
const GENERATED: &str = "vclink.io/generated-by: helm";
const MASK: &str = "<generated at install: genCA/genSignedCert>";

/// The snapshot text of one render.
pub fn snapshot_text(case: &Case, rendered: &Rendered) -> String {
    let mut out = format!(
        "# Snapshot of chart `{}` rendered with {:?} (release {}, namespace {}).\n\
         # Regenerate: VCLINK_UPDATE_SNAPSHOTS=1 cargo test -p vclink-packaging-tests --test render\n",
        case.chart, case.values, case.release, case.namespace
    );
    for (source, text) in &rendered.manifests {
        if source.ends_with("NOTES.txt") || text.trim().is_empty() {
            continue;
        }
        out.push_str("---\n# Source: ");
        out.push_str(source);
        out.push('\n');
        out.push_str(&mask_generated(text.trim_matches('\n')));
        out.push('\n');
    }
    out
}

/// Masks the data lines of generated TLS Secrets, document by document.
fn mask_generated(text: &str) -> String {
    let mut docs: Vec<Vec<String>> = vec![Vec::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(Vec::new());
        }
        if let Some(d) = docs.last_mut() {
            d.push(line.to_string());
        }
    }
    for doc in &mut docs {
        if doc.iter().any(|l| l.trim() == GENERATED) {
            for l in doc.iter_mut() {
                for key in ["tls.crt", "tls.key", "ca.crt"] {
                    if l.starts_with(&format!("  {key}: ")) {
                        *l = format!("  {key}: {MASK}");
                    }
                }
            }
        }
    }
    docs.into_iter()
        .map(|d| d.join("\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Outcome of comparing with the stored snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Compared {
    /// Identical.
    Same,
    /// Rewritten because `VCLINK_UPDATE_SNAPSHOTS=1`.
    Updated,
    /// Different: the first differing lines, for the failure message.
    Differs(String),
}

/// Compares `text` with the snapshot at `path` (or writes it when asked to).
pub fn compare(path: &Path, text: &str) -> Result<Compared> {
    let update = std::env::var("VCLINK_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
    let stored = std::fs::read_to_string(path).unwrap_or_default();
    if stored == text {
        return Ok(Compared::Same);
    }
    if update {
        std::fs::write(path, text).map_err(|e| ChartError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        return Ok(Compared::Updated);
    }
    Ok(Compared::Differs(first_difference(&stored, text)))
}

fn first_difference(old: &str, new: &str) -> String {
    let (o, n): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let at = o
        .iter()
        .zip(&n)
        .position(|(a, b)| a != b)
        .unwrap_or(o.len().min(n.len()));
    let from = at.saturating_sub(2);
    let mut s = format!("first difference at line {}:\n", at + 1);
    for l in o.iter().skip(from).take(6) {
        s.push_str(&format!("- {l}\n"));
    }
    for l in n.iter().skip(from).take(6) {
        s.push_str(&format!("+ {l}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_secrets_are_masked() {
        let text = "kind: Secret\nmetadata:\n  annotations:\n    vclink.io/generated-by: helm\ndata:\n  tls.crt: QUJD\n---\nkind: Secret\ndata:\n  tls.crt: REVG";
        let masked = mask_generated(text);
        assert!(masked.contains(&format!("  tls.crt: {MASK}")));
        assert!(
            masked.contains("  tls.crt: REVG"),
            "a user-provided Secret stays as rendered"
        );
        assert!(!masked.contains("QUJD"));
    }

    #[test]
    fn differences_name_the_line() {
        let d = first_difference("a\nb\nc", "a\nx\nc");
        assert!(d.starts_with("first difference at line 2"), "{d}");
        assert!(d.contains("- b") && d.contains("+ x"));
    }
}
