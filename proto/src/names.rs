//! Deterministic Rancher cluster names for vClusters.
//!
//! The name is `<host>-<namespace>-<name>` when that is a valid DNS-1123 label of at
//! most 63 characters. `<host>` is the host cluster's Rancher display name
//! ([`host_part`]; its `c-m-…` id when the display name is missing or unusable), or the
//! prefix the vCluster's Service asks for. Names are computed only when a cluster is
//! created: an existing cluster is found by its labels and never renamed, so a changed
//! display name or annotation affects only clusters created afterwards. Longer names are cut and given a hash suffix of the full name, so
//! the same vCluster always gets the same name. Two different vClusters can only meet on
//! a shortened name by a hash collision; the hub detects that from the owner labels and
//! asks for the next candidate (`attempt` > 0), so a collision never merges two
//! vClusters into one Rancher cluster.

use sha2::{Digest, Sha256};

/// Longest Kubernetes object name that is also a DNS-1123 label.
pub const MAX_NAME: usize = 63;
const HASH_HEX: usize = 10;

/// Longest `<host>` part taken from a display name, so the namespace and name stay
/// readable (the same bound as a requested prefix).
pub const MAX_HOST_PART: usize = 40;

/// The `<host>` part of default names: the host's Rancher display name, sanitized and
/// cut to [`MAX_HOST_PART`]; its management cluster id `id` when the display name is
/// missing, sanitizes to nothing or is reserved (`local`, `c-m-…`).
pub fn host_part(id: &str, display_name: Option<&str>) -> String {
    let Some(display) = display_name else {
        return id.to_string();
    };
    let mut part: String = sanitize(display).chars().take(MAX_HOST_PART).collect();
    while part.ends_with('-') {
        part.pop();
    }
    if part.is_empty() || is_reserved(&part) {
        id.to_string()
    } else {
        part
    }
}

/// The `attempt`-th candidate name for a vCluster. Attempt 0 is the preferred name.
pub fn cluster_name(host: &str, namespace: &str, name: &str, attempt: u32) -> String {
    let full = sanitize(&format!("{host}-{namespace}-{name}"));
    if attempt == 0 && full.len() <= MAX_NAME && !is_reserved(&full) {
        return full;
    }
    shortened(&full, attempt)
}

/// A name the user asked for (annotation), with the same shortening rules.
pub fn requested_name(requested: &str, attempt: u32) -> String {
    let clean = sanitize(requested);
    if attempt == 0 && clean.len() >= 2 && clean.len() <= MAX_NAME && !is_reserved(&clean) {
        return clean;
    }
    shortened(&clean, attempt)
}

fn shortened(full: &str, attempt: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(full.as_bytes());
    if attempt > 0 {
        hasher.update(format!("#{attempt}").as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    let keep = MAX_NAME - HASH_HEX - 1;
    let mut prefix: String = full.chars().take(keep).collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    if prefix.is_empty() {
        prefix.push('v');
    }
    format!("{prefix}-{}", &digest[..HASH_HEX])
}

/// Lowercases and replaces anything outside `[a-z0-9-]` with `-`, trimming dashes at
/// the ends, so any input turns into a DNS-1123 label candidate.
fn sanitize(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

/// Rancher reserves `c-xxxxx` and `c-m-xxxxxxxx` names and `local`.
pub fn is_reserved(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    name == "local"
        || (b.len() == 7 && name.starts_with("c-") && alnum(&b[2..]))
        || (b.len() == 12 && name.starts_with("c-m-") && alnum(&b[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::is_dns1123_label;

    #[test]
    fn short_names_are_kept_verbatim() {
        assert_eq!(
            cluster_name("c-m-abcd1234", "team-a", "vc1", 0),
            "c-m-abcd1234-team-a-vc1"
        );
    }

    #[test]
    fn long_names_are_shortened_stably_and_validly() {
        let ns = "a-very-long-namespace-name-that-goes-on-and-on";
        let a = cluster_name("c-m-abcd1234", ns, "my-virtual-cluster", 0);
        let b = cluster_name("c-m-abcd1234", ns, "my-virtual-cluster", 0);
        assert_eq!(a, b);
        assert!(a.len() <= MAX_NAME, "{a}");
        assert!(is_dns1123_label(&a), "{a}");
        let other = cluster_name("c-m-abcd1234", ns, "my-virtual-cluster2", 0);
        assert_ne!(a, other, "names differing only past the cut must differ");
    }

    #[test]
    fn later_attempts_give_other_valid_names() {
        let a0 = cluster_name("c-m-abcd1234", "ns", "vc", 0);
        let a1 = cluster_name("c-m-abcd1234", "ns", "vc", 1);
        let a2 = cluster_name("c-m-abcd1234", "ns", "vc", 2);
        assert_ne!(a0, a1);
        assert_ne!(a1, a2);
        assert!(is_dns1123_label(&a1) && is_dns1123_label(&a2));
    }

    #[test]
    fn reserved_names_are_avoided() {
        assert!(is_reserved("c-m-abcd1234"));
        assert!(is_reserved("c-abc12"));
        assert!(!is_reserved("c-m-abcd1234-ns-vc"));
        let r = requested_name("local", 0);
        assert_ne!(r, "local");
        assert!(is_dns1123_label(&r));
    }

    #[test]
    fn host_part_is_the_sanitized_display_name_or_the_id() {
        let id = "c-m-abcd1234";
        assert_eq!(host_part(id, Some("Prod EU (west)")), "prod-eu--west");
        assert_eq!(host_part(id, Some("downstream-0")), "downstream-0");
        assert_eq!(host_part(id, None), id);
        assert_eq!(host_part(id, Some("")), id);
        assert_eq!(host_part(id, Some("!!!")), id, "sanitizes to nothing");
        assert_eq!(host_part(id, Some("Local")), id, "reserved");
        assert_eq!(
            host_part(id, Some("c-m-zz99yy88")),
            id,
            "another cluster's id"
        );
        let long = host_part(id, Some(&format!("{}-x", "a".repeat(39))));
        assert_eq!(
            long,
            "a".repeat(39),
            "cut to the bound without a trailing dash"
        );
        assert!(host_part(id, Some(&"ß".repeat(100))).len() <= MAX_HOST_PART);
        assert_eq!(
            cluster_name(&host_part(id, Some("Prod")), "team-a", "vc1", 0),
            "prod-team-a-vc1"
        );
    }
}
