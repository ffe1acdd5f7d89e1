//! Relative links in the repository's Markdown files (and a chart's local icon) must
//! resolve to a file or directory inside the repository: a reader following one must
//! never land outside the checkout or on nothing. Links with a scheme (`https:`,
//! `mailto:`) and pure anchors are not checked; `#fragment` and `?query` are cut off.

use std::path::{Component, Path, PathBuf};

/// One link that does not resolve.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub file: String,
    pub line: usize,
    pub target: String,
    pub why: &'static str,
}

/// Every `*.md` file under `root`, skipping build output, VCS data and virtualenvs.
pub fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules" | ".venv") {
                    stack.push(p);
                }
            } else if name.ends_with(".md") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The link targets of Markdown `text`, with their line numbers: inline links and
/// images `[x](target)` / `![x](target "title")`, reference definitions `[x]: target`
/// and `<img src="...">`. Code spans and fenced code blocks are skipped.
pub fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let line = strip_code_spans(raw);
        if let Some(rest) = line.trim_start().strip_prefix('[')
            && let Some((_, after)) = rest.split_once("]:")
        {
            if let Some(t) = after.split_whitespace().next() {
                out.push((line_no, t.trim_matches(['<', '>']).to_string()));
            }
            continue;
        }
        let mut rest = line.as_str();
        while let Some(pos) = rest.find("](") {
            let after = &rest[pos + 2..];
            let Some(end) = after.find(')') else { break };
            let inner = after[..end].trim();
            let target = inner.split_whitespace().next().unwrap_or("");
            out.push((line_no, target.trim_matches(['<', '>']).to_string()));
            rest = &after[end..];
        }
        let mut rest = line.as_str();
        while let Some(pos) = rest.find("src=\"") {
            let after = &rest[pos + 5..];
            let Some(end) = after.find('"') else { break };
            out.push((line_no, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

fn strip_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// Whether `target` has a URL scheme (`https:`, `mailto:`, ...).
pub fn has_scheme(target: &str) -> bool {
    target.split_once(':').is_some_and(|(s, _)| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// Checks one link from file `from` (absolute) against the repository `root`.
pub fn check(root: &Path, from: &Path, target: &str) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("empty link");
    }
    if has_scheme(target) || target.starts_with('#') {
        return Ok(());
    }
    let path_part = target.split(['#', '?']).next().unwrap_or("");
    let joined = if let Some(abs) = path_part.strip_prefix('/') {
        root.join(abs)
    } else {
        from.parent().unwrap_or(root).join(path_part)
    };
    let normal = normalize(&joined);
    if !normal.starts_with(normalize(root)) {
        return Err("points outside the repository");
    }
    if !normal.exists() {
        return Err("no such file or directory");
    }
    Ok(())
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every broken relative link of every Markdown file under `root`.
pub fn broken_links(root: &Path) -> Vec<Broken> {
    let mut out = Vec::new();
    for file in markdown_files(root) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (line, target) in link_targets(&text) {
            if let Err(why) = check(root, &file, &target) {
                out.push(Broken {
                    file: file
                        .strip_prefix(root)
                        .unwrap_or(&file)
                        .display()
                        .to_string(),
                    line,
                    target,
                    why,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_links_images_and_references_but_not_code() {
        let md = "see [a](docs/a.md#x) and ![i](img.svg \"t\")\n`[no](code.md)`\n```\n[no](fenced.md)\n```\n[ref]: ../out.md\n<img src=\"b.png\">";
        let t: Vec<String> = link_targets(md).into_iter().map(|(_, t)| t).collect();
        assert_eq!(t, vec!["docs/a.md#x", "img.svg", "../out.md", "b.png"]);
    }

    #[test]
    fn outside_and_missing_targets_fail() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs")).expect("mkdir");
        std::fs::write(root.join("docs/a.md"), "").expect("write");
        let from = root.join("README.md");
        assert_eq!(check(root, &from, "docs/a.md#top"), Ok(()));
        assert_eq!(check(root, &from, "https://x.example"), Ok(()));
        assert_eq!(
            check(root, &from, "../shared/x.md"),
            Err("points outside the repository")
        );
        assert_eq!(
            check(root, &from, "docs/b.md"),
            Err("no such file or directory")
        );
    }
}
