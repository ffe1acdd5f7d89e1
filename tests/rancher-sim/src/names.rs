//! Names and ids the Rancher simulator generates or checks, as pure functions:
//! random ids in Rancher's shapes (`c-m-xxxxxxxx`, `p-xxxxx`, `u-xxxxx`), registration
//! and API token secrets, provisioning-cluster name rules (docs/rancher.md: Imported clusters) and the
//! deterministic CRTB name of webhook v0.10 (§6).

use rand::Rng;
use sha2::{Digest, Sha256};

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Rancher's registration-token alphabet (no vowels, no look-alikes).
const TOKEN_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// `c-m-` + 8 random lowercase alphanumerics.
pub fn mgmt_cluster_id() -> String {
    format!("c-m-{}", random_from(LOWER_ALNUM, 8))
}

/// `p-` + 5 random lowercase alphanumerics.
pub fn project_id() -> String {
    format!("p-{}", random_from(LOWER_ALNUM, 5))
}

/// `u-` + 5 random lowercase alphanumerics.
pub fn user_id() -> String {
    format!("u-{}", random_from(LOWER_ALNUM, 5))
}

/// `token-` + 5 random lowercase alphanumerics.
pub fn token_name() -> String {
    format!("token-{}", random_from(LOWER_ALNUM, 5))
}

/// A 54-character secret in Rancher's token alphabet.
pub fn token_secret() -> String {
    random_from(TOKEN_ALPHABET, 54)
}

/// Lowercase base32 (no padding) of SHA-256, cut to `n` characters.
fn hash32(input: &str, n: usize) -> String {
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = Sha256::digest(input.as_bytes());
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for byte in digest {
        buf = (buf << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 && out.len() < n {
            bits -= 5;
            out.push(B32[((buf >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// The principal Rancher uses for a provisioning cluster's own kubeconfig user.
pub fn provisioning_principal(ns: &str, name: &str) -> String {
    format!("system://provisioning/{ns}/{name}")
}

/// The user name Rancher derives from a principal (`u-` + 10 chars of its hash).
pub fn user_for_principal(principal: &str) -> String {
    format!("u-{}", hash32(principal, 10))
}

/// Deterministic CRTB name for a `generateName` create (webhook v0.10+): the same
/// cluster, role and subject always give the same name, so a duplicate conflicts.
pub fn deterministic_crtb_name(
    generate_name: &str,
    cluster: &str,
    role: &str,
    subject: &str,
) -> String {
    let prefix = if generate_name.is_empty() {
        "crtb-"
    } else {
        generate_name
    };
    let mut name = format!(
        "{prefix}{}",
        hash32(&format!("{cluster}/{role}/{subject}"), 10)
    );
    name.truncate(63);
    name
}

/// Why a provisioning cluster name is refused, or `None` when it is valid.
pub fn provisioning_name_error(name: &str, namespace: &str) -> Option<String> {
    if name.len() < 2 || name.len() > 63 {
        return Some(format!(
            "cluster name must be 2-63 characters long, got {}",
            name.len()
        ));
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_chars || name.starts_with('-') || name.ends_with('-') {
        return Some("cluster name must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into());
    }
    if is_reserved_id(name) {
        return Some(format!(
            "cluster name {name} is reserved for Rancher-generated ids"
        ));
    }
    if name == "local" && namespace != "fleet-local" {
        return Some("cluster name local is only allowed in namespace fleet-local".into());
    }
    None
}

/// `c-xxxxx` and `c-m-xxxxxxxx` are the shapes of Rancher's generated cluster ids.
fn is_reserved_id(name: &str) -> bool {
    let alnum = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match name.strip_prefix("c-") {
        Some(rest) => alnum(rest, 5) || rest.strip_prefix("m-").is_some_and(|r| alnum(r, 8)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_rancher_shapes() {
        let c = mgmt_cluster_id();
        assert!(c.starts_with("c-m-") && c.len() == 12, "{c}");
        assert!(is_reserved_id(&c));
        assert_eq!(project_id().len(), 7);
        assert_eq!(token_secret().len(), 54);
        assert_ne!(token_secret(), token_secret());
    }

    #[test]
    fn name_rules() {
        assert!(provisioning_name_error("my-vc", "fleet-default").is_none());
        assert!(provisioning_name_error("a", "fleet-default").is_some());
        assert!(provisioning_name_error(&"a".repeat(64), "fleet-default").is_some());
        assert!(provisioning_name_error("-ab", "fleet-default").is_some());
        assert!(provisioning_name_error("Abc", "fleet-default").is_some());
        assert!(provisioning_name_error("c-abcde", "fleet-default").is_some());
        assert!(provisioning_name_error("c-m-abcd1234", "fleet-default").is_some());
        assert!(provisioning_name_error("c-abcdef", "fleet-default").is_none());
        assert!(provisioning_name_error("local", "fleet-default").is_some());
        assert!(provisioning_name_error("local", "fleet-local").is_none());
    }

    #[test]
    fn crtb_names_are_deterministic() {
        let a = deterministic_crtb_name("crtb-", "c-m-1", "cluster-owner", "user:u-1");
        let b = deterministic_crtb_name("crtb-", "c-m-1", "cluster-owner", "user:u-1");
        let c = deterministic_crtb_name("crtb-", "c-m-1", "cluster-member", "user:u-1");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("crtb-"));
        assert_eq!(user_for_principal("system://provisioning/a/b").len(), 12);
    }
}
