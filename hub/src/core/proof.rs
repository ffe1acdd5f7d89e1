//! Proofs that the hub created (or adopted) a provisioning cluster, so that labels alone
//! never make a cluster "ours": anyone allowed to create clusters in the workspace can
//! copy another vCluster's labels, but nobody without the hub's key can produce these.
//!
//! Two annotations, both HMAC-SHA256 under the hub's key (a Secret it creates once):
//!
//! - [`ANNOTATION_PROOF`], written on the create itself:
//!   `v1.<unix-seconds>.<hex hmac("v1|create|<ns>|<name>|<host>|<svc-uid>|<unix-seconds>")>`.
//!   The object's UID is not known before the create, so this one binds the signing
//!   time instead; it counts only while the object's `creationTimestamp` lies within
//!   [`CREATE_WINDOW_SECS`] of that time. It covers a crash between the create and the
//!   next patch.
//! - [`ANNOTATION_PROOF_UID`], patched right after the create returns (and on adoption):
//!   `v1.<hex hmac("v1|uid|<ns>|<name>|<host>|<svc-uid>|<object-uid>")>`.
//!
//! Copying every label and annotation onto another object fails: another name changes
//! the signed text, the same name later is another UID (and a `creationTimestamp` far
//! from the signed time). Pure: no I/O; verification is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Annotation holding the create-time proof.
pub const ANNOTATION_PROOF: &str = "vclink.io/proof";
/// Annotation holding the proof bound to the object's UID.
pub const ANNOTATION_PROOF_UID: &str = "vclink.io/proof-uid";
/// How far `creationTimestamp` may lie from the time a create-time proof signed.
pub const CREATE_WINDOW_SECS: i64 = 600;
/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;

const VERSION: &str = "v1";
const MAC_HEX_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// The hub's proof key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ProofKey([u8; KEY_LEN]);

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(redacted)")
    }
}

/// A key of the wrong length.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the proof key must be {KEY_LEN} bytes, found {0}")]
pub struct BadKey(pub usize);

impl ProofKey {
    /// The key from its raw bytes (exactly [`KEY_LEN`]).
    pub fn from_bytes(b: &[u8]) -> Result<Self, BadKey> {
        <[u8; KEY_LEN]>::try_from(b)
            .map(Self)
            .map_err(|_| BadKey(b.len()))
    }

    fn mac(&self, text: &str) -> HmacSha256 {
        // HMAC takes keys of any length; the error branch cannot happen.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        m.update(text.as_bytes());
        m
    }
}

/// What a proof is about: the provisioning cluster's place and the vCluster it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The cluster's namespace (the Fleet workspace).
    pub namespace: &'a str,
    /// The cluster's name.
    pub name: &'a str,
    /// The host cluster id on its labels.
    pub host: &'a str,
    /// The vCluster's Service UID on its labels.
    pub svc_uid: &'a str,
}

impl Subject<'_> {
    fn create_text(&self, unix: i64) -> String {
        format!(
            "{VERSION}|create|{}|{}|{}|{}|{unix}",
            self.namespace, self.name, self.host, self.svc_uid
        )
    }

    fn uid_text(&self, object_uid: &str) -> String {
        format!(
            "{VERSION}|uid|{}|{}|{}|{}|{object_uid}",
            self.namespace, self.name, self.host, self.svc_uid
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    // Lowercase only: one spelling per tag.
    let digit = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if s.len() != MAC_HEX_LEN || !s.bytes().all(digit) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The create-time proof for `s`, signed at `unix` seconds.
pub fn sign_create(key: &ProofKey, s: &Subject<'_>, unix: i64) -> String {
    let tag = key.mac(&s.create_text(unix)).finalize().into_bytes();
    format!("{VERSION}.{unix}.{}", hex(&tag))
}

/// The proof binding `s` to the object UID `object_uid`.
pub fn sign_uid(key: &ProofKey, s: &Subject<'_>, object_uid: &str) -> String {
    let tag = key.mac(&s.uid_text(object_uid)).finalize().into_bytes();
    format!("{VERSION}.{}", hex(&tag))
}

/// Both proofs, as written together on adoption or relabelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The [`ANNOTATION_PROOF`] value.
    pub proof: String,
    /// The [`ANNOTATION_PROOF_UID`] value.
    pub proof_uid: String,
}

/// Both proofs for `s` on the existing object `object_uid`, signed at `unix`.
pub fn sign_both(key: &ProofKey, s: &Subject<'_>, unix: i64, object_uid: &str) -> Signed {
    Signed {
        proof: sign_create(key, s, unix),
        proof_uid: sign_uid(key, s, object_uid),
    }
}

/// What is known about the object whose proofs are judged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed<'a> {
    /// `metadata.uid` (empty when unknown: then the UID proof cannot pass).
    pub object_uid: &'a str,
    /// `metadata.creationTimestamp` in unix seconds.
    pub created_unix: Option<i64>,
    /// The [`ANNOTATION_PROOF`] value.
    pub proof: Option<&'a str>,
    /// The [`ANNOTATION_PROOF_UID`] value.
    pub proof_uid: Option<&'a str>,
}

/// Why a cluster carrying vclink labels is not trusted (metric label values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unproven {
    /// Neither proof annotation.
    Missing,
    /// A proof that does not verify (forged, tampered, copied, malformed).
    Invalid,
    /// A valid create-time proof on an object created too far from the signed time
    /// (a copy onto a re-created object).
    OutsideWindow,
}

impl Unproven {
    /// Every reason, for gauges that report zeros too.
    pub const ALL: [Unproven; 3] = [Self::Missing, Self::Invalid, Self::OutsideWindow];

    /// Metric label / log text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::OutsideWindow => "outside_window",
        }
    }
}

/// The verdict on one provisioning cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The UID-bound proof verifies.
    Proven,
    /// Only the create-time proof verifies (the hub still has to write the UID proof).
    ProvenAtCreate,
    /// Not the hub's.
    Unproven(Unproven),
}

impl Default for Trust {
    /// What an object without annotations is.
    fn default() -> Self {
        Self::Unproven(Unproven::Missing)
    }
}

impl Trust {
    /// The hub may act on the cluster.
    pub fn is_proven(self) -> bool {
        matches!(self, Self::Proven | Self::ProvenAtCreate)
    }
}

fn verify(key: &ProofKey, text: &str, tag_hex: &str) -> bool {
    match unhex(tag_hex) {
        Some(tag) => key.mac(text).verify_slice(&tag).is_ok(),
        None => false,
    }
}

/// Whether the UID-bound proof `value` verifies for `s` on the object `object_uid`.
pub fn verify_uid(key: &ProofKey, s: &Subject<'_>, object_uid: &str, value: &str) -> bool {
    !object_uid.is_empty()
        && value
            .strip_prefix("v1.")
            .is_some_and(|tag| verify(key, &s.uid_text(object_uid), tag))
}

/// The signed time of a create-time proof `value` for `s`, if it verifies.
pub fn verify_create(key: &ProofKey, s: &Subject<'_>, value: &str) -> Option<i64> {
    let rest = value.strip_prefix("v1.")?;
    let (secs, tag) = rest.split_once('.')?;
    if secs.is_empty() || secs.len() > 19 || !secs.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let unix: i64 = secs.parse().ok()?;
    verify(key, &s.create_text(unix), tag).then_some(unix)
}

/// Judges the proofs on one object. See the module docs.
pub fn judge(key: &ProofKey, s: &Subject<'_>, o: &Observed<'_>) -> Trust {
    if o.proof.is_none() && o.proof_uid.is_none() {
        return Trust::Unproven(Unproven::Missing);
    }
    if o.proof_uid
        .is_some_and(|v| verify_uid(key, s, o.object_uid, v))
    {
        return Trust::Proven;
    }
    match o.proof.and_then(|v| verify_create(key, s, v)) {
        Some(signed) => match o.created_unix {
            Some(c) if c.abs_diff(signed) <= CREATE_WINDOW_SECS.unsigned_abs() => {
                Trust::ProvenAtCreate
            }
            _ => Trust::Unproven(Unproven::OutsideWindow),
        },
        None => Trust::Unproven(Unproven::Invalid),
    }
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
