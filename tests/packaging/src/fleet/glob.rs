//! `.fleetignore` as Fleet reads it (rancher/fleet `internal/bundlereader/loaddirectory.go`,
//! `readFleetIgnore` and `ignoreTree.isIgnored`): one pattern per line, `#` comments and
//! blank lines skipped, trailing unescaped spaces trimmed; a pattern `dir/*` ignores a
//! directory named `dir`, any other pattern is Go's `filepath.Match` against the entry's
//! base name (`*`, `?`, `[...]` classes with ranges and `^`, `\` escapes).

/// The patterns of one `.fleetignore` file.
pub fn fleetignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let trimmed = l.trim_end();
            // An escaped trailing space ("\ ") is kept, like Fleet's regex `([^\\])\s+$`.
            if trimmed.ends_with('\\') && l.len() > trimmed.len() {
                format!("{trimmed} ")
            } else {
                trimmed.to_string()
            }
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Whether an entry named `name` is ignored by `patterns`.
pub fn ignored(patterns: &[String], name: &str, is_dir: bool) -> bool {
    patterns.iter().any(|p| {
        // isAllFilesInDirPattern: `^.+/\*` — matches directories only, by name.
        if p.find("/*").is_some_and(|i| i > 0) {
            is_dir && p.strip_suffix("/*").unwrap_or(p) == name
        } else {
            matches(p.as_bytes(), name.as_bytes())
        }
    })
}

/// Go `filepath.Match` on a base name (no separators in `name`); a malformed pattern
/// matches nothing.
pub fn matches(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => {
            (0..=s.len()).any(|i| s[..i].iter().all(|&c| c != b'/') && matches(&p[1..], &s[i..]))
        }
        Some(b'?') => !s.is_empty() && s[0] != b'/' && matches(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(&c) = s.first() else { return false };
            let mut i = 1;
            let negate = p.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            let mut first = true;
            loop {
                let Some(&lo) = p.get(i) else { return false };
                if lo == b']' && !first {
                    i += 1;
                    break;
                }
                first = false;
                let (lo, next) = if lo == b'\\' {
                    match p.get(i + 1) {
                        Some(&e) => (e, i + 2),
                        None => return false,
                    }
                } else {
                    (lo, i + 1)
                };
                let (hi, next) =
                    if p.get(next) == Some(&b'-') && p.get(next + 1).is_some_and(|&h| h != b']') {
                        (p[next + 1], next + 2)
                    } else {
                        (lo, next)
                    };
                if lo <= c && c <= hi {
                    hit = true;
                }
                i = next;
            }
            hit != negate && matches(&p[i..], &s[1..])
        }
        Some(b'\\') => p.len() > 1 && s.first() == Some(&p[1]) && matches(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && matches(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_subset() {
        assert!(matches(b"*.md", b"README.md"));
        assert!(!matches(b"*.md", b"README.mdx"));
        assert!(matches(b"fleet.y?ml", b"fleet.yaml"));
        assert!(matches(b"[a-c]x", b"bx"));
        assert!(!matches(b"[^a-c]x", b"bx"));
        assert!(matches(b"\\*", b"*"));
    }

    #[test]
    fn directory_patterns_and_comments() {
        let p = fleetignore_patterns("# c\n\ndocs/*\n*.md   \n");
        assert_eq!(p, vec!["docs/*".to_string(), "*.md".to_string()]);
        assert!(ignored(&p, "docs", true));
        assert!(!ignored(&p, "docs", false));
        assert!(ignored(&p, "x.md", false));
    }
}
