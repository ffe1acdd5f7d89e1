//! Unit tests of the reader and the graph on small inline crates, so the checker is
//! known to fail when it should.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Crate, Rule, check_rules, cycles};

/// A crate from `(file below src/, text)` pairs.
fn krate(files: &[(&str, &str)]) -> Crate {
    let src: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (Path::new("src").join(p), t.to_string()))
        .collect();
    Crate::load(Path::new("src"), &src).expect("crate loads")
}

fn edges(c: &Crate, parent: &[&str]) -> Vec<(String, String)> {
    let parent: Vec<String> = parent.iter().map(|s| s.to_string()).collect();
    c.graph(&parent).edges.keys().cloned().collect()
}

fn e(a: &str, b: &str) -> (String, String) {
    (a.into(), b.into())
}

#[test]
fn a_cycle_is_found_and_named() {
    let c = krate(&[
        ("lib.rs", "mod a; mod b; mod c;"),
        ("a.rs", "use crate::b::X; pub struct Y;"),
        ("b.rs", "pub struct X; fn f() -> crate::c::Z { todo!() }"),
        ("c.rs", "pub struct Z; fn g(_: &crate::a::Y) {}"),
    ]);
    let found = cycles(&c);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("a -> b -> c -> a"), "{}", found[0]);
    assert!(found[0].contains("c.rs uses `crate::a::Y`"), "{}", found[0]);
}

#[test]
fn no_cycle_in_a_layered_crate() {
    let c = krate(&[
        ("lib.rs", "mod a; mod b; use a::Y; use b::X;"),
        ("a.rs", "use crate::b::X; pub struct Y;"),
        ("b.rs", "pub struct X;"),
    ]);
    assert!(cycles(&c).is_empty());
    assert_eq!(
        edges(&c, &[]),
        vec![e("a", "b")],
        "the root's own uses do not count"
    );
}

#[test]
fn a_use_group_yields_one_edge_per_module() {
    let c = krate(&[
        ("lib.rs", "mod a; mod b; mod x;"),
        ("a.rs", "pub mod x {}"),
        ("b.rs", ""),
        ("x.rs", "use crate::{a::x, b};"),
    ]);
    assert_eq!(edges(&c, &[]), vec![e("x", "a"), e("x", "b")]);
    let r: Vec<&str> = c.refs.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(r, vec!["crate::a::x", "crate::b"]);
    assert_eq!(
        c.resolve(&c.refs[0].target),
        vec!["a".to_string(), "x".to_string()]
    );
}

#[test]
fn super_paths_resolve_to_sibling_files() {
    let c = krate(&[
        ("lib.rs", "mod grpc;"),
        ("grpc/mod.rs", "mod auth; mod service; pub use service::S;"),
        ("grpc/auth.rs", "pub trait A {}"),
        (
            "grpc/service.rs",
            "use super::auth::A; pub struct S; impl S { fn f(&self) -> super::super::grpc::auth::Dummy { todo!() } }",
        ),
    ]);
    assert_eq!(edges(&c, &["grpc"]), vec![e("service", "auth")]);
    // `grpc/mod.rs` using `service` is the folder wiring its files, not an edge.
    assert!(edges(&c, &[]).is_empty());
    let targets: Vec<Vec<String>> = c
        .refs
        .iter()
        .filter(|r| r.from.len() == 2)
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets[0], vec!["grpc", "auth", "A"]);
    assert_eq!(targets[1], vec!["grpc", "auth", "Dummy"]);
}

#[test]
fn a_cycle_between_sibling_files_is_found() {
    let c = krate(&[
        ("lib.rs", "mod hub;"),
        ("hub/mod.rs", "mod one; mod two;"),
        ("hub/one.rs", "use super::two::T; pub struct O;"),
        ("hub/two.rs", "pub struct T(pub super::one::O);"),
    ]);
    let found = cycles(&c);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("crate::hub: one -> two -> one"),
        "{}",
        found[0]
    );
}

#[test]
fn every_tangle_is_reported() {
    let c = krate(&[
        ("lib.rs", "mod a; mod b; mod c; mod d; mod e;"),
        ("a.rs", "use crate::b::X;"),
        ("b.rs", "use crate::a::Y; use crate::c::Z;"),
        ("c.rs", "use crate::d::W;"),
        ("d.rs", "use crate::c::V;"),
        ("e.rs", "use crate::a::Y;"),
    ]);
    let found = cycles(&c);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("import circle among the children of crate: a -> b -> a"),
        "{}",
        found[0]
    );
    assert!(found[1].contains("c -> d -> c"), "{}", found[1]);
}

#[test]
fn test_code_is_skipped() {
    let c = krate(&[
        ("lib.rs", "mod a; mod b;"),
        (
            "a.rs",
            "pub struct A;\n\
             #[cfg(test)] mod tests { use crate::b::B; }\n\
             #[cfg(test)] #[path = \"a_tests.rs\"] mod more;\n\
             #[cfg(test)] fn helper() -> crate::b::B { todo!() }\n\
             mod files_tests;",
        ),
        ("a_tests.rs", "use crate::b::B;"),
        ("a/files_tests.rs", "use crate::b::B;"),
        ("b.rs", "pub struct B; fn f() -> crate::a::A { todo!() }"),
    ]);
    assert_eq!(edges(&c, &[]), vec![e("b", "a")]);
    assert!(!c.modules.iter().any(|m| {
        m.iter()
            .any(|s| s == "tests" || s == "more" || s == "files_tests")
    }));
}

#[test]
fn paths_inside_macros_and_function_bodies_count() {
    let c = krate(&[
        ("lib.rs", "mod a; mod b; mod c;"),
        (
            "a.rs",
            "fn f() { tokio::select! { _ = crate::b::wait() => {} } }",
        ),
        (
            "b.rs",
            "pub async fn wait() {} fn g() { use crate::c::C; let _ = C; }",
        ),
        (
            "c.rs",
            "pub struct C; fn h() { tracing::info!(x = %super::b::NAME); }",
        ),
    ]);
    assert_eq!(edges(&c, &[]), vec![e("a", "b"), e("b", "c"), e("c", "b")]);
    assert_eq!(cycles(&c).len(), 1);
}

#[test]
fn visibility_and_attributes_are_not_uses() {
    let c = krate(&[
        ("lib.rs", "mod a; mod b;"),
        (
            "a.rs",
            "pub(in crate::b) struct A; #[crate::b::marker] fn f() {}",
        ),
        ("b.rs", ""),
    ]);
    assert!(edges(&c, &[]).is_empty());
}

#[test]
fn rules_are_checked_or_skipped_with_a_note() {
    let c = krate(&[
        ("lib.rs", "mod core; mod grpc; mod state;"),
        ("core.rs", "use crate::state::Hub;"),
        ("grpc.rs", "use crate::core::K;"),
        ("state.rs", "pub struct Hub;"),
    ]);
    let rules = [
        Rule {
            from: "core",
            forbidden: None,
        },
        Rule {
            from: "grpc",
            forbidden: Some(&["rancher"]),
        },
        Rule {
            from: "grpc",
            forbidden: Some(&["state"]),
        },
    ];
    let report = check_rules(&c, &rules);
    assert_eq!(report.broken.len(), 1, "{:?}", report.broken);
    assert!(
        report.broken[0].contains("core.rs uses `crate::state::Hub`"),
        "{}",
        report.broken[0]
    );
    assert_eq!(report.skipped.len(), 1);
    assert!(
        report.skipped[0].contains("no module rancher"),
        "{}",
        report.skipped[0]
    );
}

#[test]
fn a_missing_module_file_is_an_error() {
    let src: BTreeMap<PathBuf, String> =
        [(PathBuf::from("src/lib.rs"), "mod gone;".to_string())].into();
    let err = Crate::load(Path::new("src"), &src).expect_err("missing file");
    assert!(err.to_string().contains("gone.rs"), "{err}");
}
