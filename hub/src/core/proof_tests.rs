//! Proof signing and judging: valid proofs pass, any changed field fails, a copy onto
//! another object fails, the create-time window holds, and no annotation value panics.

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_700_000_000;

fn key() -> ProofKey {
    ProofKey::from_bytes(&[7u8; KEY_LEN]).unwrap()
}

fn subject() -> Subject<'static> {
    Subject {
        namespace: "fleet-default",
        name: "c-m-host0001-team-a-vc1",
        host: "c-m-host0001",
        svc_uid: "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d",
    }
}

fn observed<'a>(uid: &'a str, proof: Option<&'a str>, proof_uid: Option<&'a str>) -> Observed<'a> {
    Observed {
        object_uid: uid,
        created_unix: Some(NOW + 1),
        proof,
        proof_uid,
    }
}

#[test]
fn both_proofs_verify_for_the_object_they_were_made_for() {
    let s = subject();
    let create = sign_create(&key(), &s, NOW);
    let uid = sign_uid(&key(), &s, "obj-1");
    assert!(create.starts_with(&format!("v1.{NOW}.")), "{create}");
    assert_eq!(create.len(), format!("v1.{NOW}.").len() + 64);
    assert!(uid.starts_with("v1.") && uid.len() == 3 + 64, "{uid}");
    assert_eq!(
        judge(&key(), &s, &observed("obj-1", Some(&create), Some(&uid))),
        Trust::Proven
    );
    assert_eq!(
        judge(&key(), &s, &observed("obj-1", None, Some(&uid))),
        Trust::Proven
    );
    assert_eq!(
        judge(&key(), &s, &observed("obj-1", Some(&create), None)),
        Trust::ProvenAtCreate,
        "crash between create and patch"
    );
}

#[test]
fn no_proof_is_missing() {
    assert_eq!(
        judge(&key(), &subject(), &observed("obj-1", None, None)),
        Trust::Unproven(Unproven::Missing)
    );
}

#[test]
fn another_key_does_not_verify() {
    let s = subject();
    let other = ProofKey::from_bytes(&[8u8; KEY_LEN]).unwrap();
    let create = sign_create(&other, &s, NOW);
    let uid = sign_uid(&other, &s, "obj-1");
    assert_eq!(
        judge(&key(), &s, &observed("obj-1", Some(&create), Some(&uid))),
        Trust::Unproven(Unproven::Invalid)
    );
}

#[test]
fn every_signed_field_is_bound() {
    let s = subject();
    let create = sign_create(&key(), &s, NOW);
    let uid = sign_uid(&key(), &s, "obj-1");
    let changed = [
        Subject {
            namespace: "fleet-local",
            ..s
        },
        Subject {
            name: "forged",
            ..s
        },
        Subject {
            host: "c-m-other001",
            ..s
        },
        Subject {
            svc_uid: "another-uid",
            ..s
        },
    ];
    for t in changed {
        assert_eq!(
            judge(&key(), &t, &observed("obj-1", Some(&create), Some(&uid))),
            Trust::Unproven(Unproven::Invalid),
            "{t:?}"
        );
    }
    // The object UID: a copy of both annotations onto another object with the same
    // name, created long after the original.
    let copy = Observed {
        object_uid: "obj-2",
        created_unix: Some(NOW + 3600),
        proof: Some(&create),
        proof_uid: Some(&uid),
    };
    assert_eq!(
        judge(&key(), &s, &copy),
        Trust::Unproven(Unproven::OutsideWindow)
    );
    // A tampered signed time.
    let moved = create.replacen(&NOW.to_string(), &(NOW + 3600).to_string(), 1);
    assert_eq!(
        judge(&key(), &s, &observed("obj-2", Some(&moved), None)),
        Trust::Unproven(Unproven::Invalid)
    );
    // A flipped hex digit.
    let mut tampered = uid.clone();
    let last = if tampered.ends_with('0') { '1' } else { '0' };
    tampered.pop();
    tampered.push(last);
    assert_eq!(
        judge(&key(), &s, &observed("obj-1", None, Some(&tampered))),
        Trust::Unproven(Unproven::Invalid)
    );
}

#[test]
fn the_create_proof_holds_only_within_ten_minutes_of_the_creation() {
    let s = subject();
    let create = sign_create(&key(), &s, NOW);
    let at = |created: Option<i64>| {
        judge(
            &key(),
            &s,
            &Observed {
                object_uid: "obj-1",
                created_unix: created,
                proof: Some(&create),
                proof_uid: None,
            },
        )
    };
    assert_eq!(at(Some(NOW + CREATE_WINDOW_SECS)), Trust::ProvenAtCreate);
    assert_eq!(at(Some(NOW - CREATE_WINDOW_SECS)), Trust::ProvenAtCreate);
    assert_eq!(
        at(Some(NOW + CREATE_WINDOW_SECS + 1)),
        Trust::Unproven(Unproven::OutsideWindow)
    );
    assert_eq!(
        at(Some(NOW - CREATE_WINDOW_SECS - 1)),
        Trust::Unproven(Unproven::OutsideWindow)
    );
    assert_eq!(at(None), Trust::Unproven(Unproven::OutsideWindow));
}

#[test]
fn a_uid_proof_needs_a_uid() {
    let s = subject();
    let uid = sign_uid(&key(), &s, "");
    assert_eq!(
        judge(&key(), &s, &observed("", None, Some(&uid))),
        Trust::Unproven(Unproven::Invalid)
    );
}

#[test]
fn malformed_values_are_invalid() {
    let s = subject();
    let good = sign_uid(&key(), &s, "obj-1");
    let tag = good.trim_start_matches("v1.");
    for bad in [
        "",
        "v1",
        "v1.",
        "v2.",
        &format!("v2.{tag}"),
        &format!("v1.{}", tag.to_uppercase()),
        &format!("v1.{}", &tag[..62]),
        &format!("v1.{tag}00"),
        &format!("v1.-5.{tag}"),
        &format!("v1.+5.{tag}"),
        &format!("v1..{tag}"),
        &format!("v1.99999999999999999999999.{tag}"),
        "v1.1.zz",
        "v1.1.é",
    ] {
        let t = judge(&key(), &s, &observed("obj-1", Some(bad), Some(bad)));
        assert!(!t.is_proven(), "{bad:?} → {t:?}");
    }
}

#[test]
fn the_key_is_never_printed_and_has_one_length() {
    assert_eq!(format!("{:?}", key()), "ProofKey(redacted)");
    assert_eq!(ProofKey::from_bytes(&[1; 31]), Err(BadKey(31)));
    assert_eq!(ProofKey::from_bytes(&[1; 33]), Err(BadKey(33)));
}

proptest! {
    #[test]
    fn arbitrary_annotations_never_panic_nor_pass(
        proof in ".{0,120}",
        proof_uid in ".{0,120}",
        created in proptest::option::of(any::<i64>()),
    ) {
        let o = Observed { object_uid: "obj-1", created_unix: created, proof: Some(&proof), proof_uid: Some(&proof_uid) };
        prop_assert!(!judge(&key(), &subject(), &o).is_proven());
    }

    #[test]
    fn arbitrary_signed_times_round_trip(unix in 0i64..=i64::MAX) {
        let s = subject();
        let v = sign_create(&key(), &s, unix);
        prop_assert_eq!(verify_create(&key(), &s, &v), Some(unix));
    }
}
