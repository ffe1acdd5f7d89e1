//! Documentation a reader can follow: every relative link and image in every Markdown
//! file of the repository resolves to a file or directory inside it (links with a scheme
//! are not fetched), and the repository carries no pointer to material outside it.

use vclink_packaging_tests::links::{broken_links, markdown_files};
use vclink_packaging_tests::repo_root;

#[test]
fn every_relative_link_resolves_inside_the_repository() {
    let root = repo_root();
    let files = markdown_files(&root);
    for must in [
        "README.md",
        "charts/README.md",
        "docs/install.md",
        "docs/rancher.md",
        "docs/testenv.md",
    ] {
        assert!(files.contains(&root.join(must)), "{must} exists");
    }
    let broken = broken_links(&root);
    assert!(
        broken.is_empty(),
        "broken links:\n{}",
        broken
            .iter()
            .map(|b| format!("{}:{}: {} ({})", b.file, b.line, b.target, b.why))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn docs_cite_the_repository_s_own_rancher_notes() {
    let root = repo_root();
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        assert!(
            !text.contains("rancher-model.md"),
            "{rel} cites rancher-model.md; cite docs/rancher.md"
        );
        assert!(
            !text.contains("../shared/"),
            "{rel} points outside the repository"
        );
    }
}
