//! Which Service labels reach the Rancher cluster: `--sync-labels-include` and
//! `--sync-labels-exclude` (comma lists of exact keys or prefixes ending in `*`; `*`
//! alone is every key), after the fixed exclusions no flag can lift: keys of Rancher
//! (`cattle.io/`), of vclink and the vCluster chart, and Helm's bookkeeping labels (the
//! same fixed list the Go operator applies). Pure; the matcher and the reserved keys are
//! unit-tested here.

/// Keys containing one of these are never synced: Rancher's own labels (Fleet drops
/// them anyway), vclink's (they are proof-bearing identity on the cluster), the vCluster
/// chart's and the Kubernetes recommended app labels.
const RESERVED_PARTS: [&str; 5] = [
    "cattle.io/",
    "vclink.io/",
    "loft.sh/",
    "vcluster.loft.sh/",
    "app.kubernetes.io/",
];

/// Exact keys never synced: what Helm and the vCluster chart put on every Service.
const RESERVED_KEYS: [&str; 5] = ["app", "release", "helm", "heritage", "chart"];

/// One include or exclude entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// The key itself.
    Exact(String),
    /// Every key that starts with it (`org.example/*`; `*` is the empty prefix).
    Prefix(String),
}

impl Pattern {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.strip_suffix('*') {
            Some(p) if p.contains('*') => Err(format!(
                "label pattern {s:?}: `*` may only end a pattern (`org.example/*`, or `*` alone)"
            )),
            Some(p) => Ok(Self::Prefix(p.to_string())),
            None if s.contains('*') => Err(format!(
                "label pattern {s:?}: `*` may only end a pattern (`org.example/*`, or `*` alone)"
            )),
            None => Ok(Self::Exact(s.to_string())),
        }
    }

    fn matches(&self, key: &str) -> bool {
        match self {
            Self::Exact(k) => k == key,
            Self::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// The label-sync policy. The default includes nothing: label sync is off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelPolicy {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl LabelPolicy {
    /// A policy from the two flag values (empty entries are ignored); the error names
    /// the bad pattern.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        let parse = |v: &[String]| {
            v.iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Pattern::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            include: parse(include)?,
            exclude: parse(exclude)?,
        })
    }

    /// True when no label can ever be synced.
    pub fn is_off(&self) -> bool {
        self.include.is_empty()
    }

    /// Whether the Service label `key` is synced: included, not excluded, not reserved,
    /// and a valid label key.
    pub fn allows(&self, key: &str) -> bool {
        self.include.iter().any(|p| p.matches(key))
            && !self.exclude.iter().any(|p| p.matches(key))
            && !is_reserved(key)
            && valid_key(key)
    }
}

/// A key no policy may sync (see the module docs).
pub fn is_reserved(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || RESERVED_PARTS.iter().any(|p| key.contains(p))
}

/// Kubernetes label key syntax: optional DNS-subdomain prefix (≤ 253) and `/`, then a
/// name of ≤ 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric. The
/// agent's report is checked again here: a key the API server would refuse must not
/// make every write of the cluster fail.
pub fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_value(name)
}

/// Kubernetes label value syntax: empty, or ≤ 63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn valid_value(v: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
            && v.bytes().next().is_some_and(alnum)
            && v.bytes().last().is_some_and(alnum))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(include: &[&str], exclude: &[&str]) -> LabelPolicy {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        LabelPolicy::new(&v(include), &v(exclude)).expect("valid")
    }

    #[test]
    fn nothing_is_synced_by_default() {
        let p = LabelPolicy::default();
        assert!(p.is_off());
        assert!(!p.allows("team"));
        assert!(
            policy(&[""], &[]).is_off(),
            "an empty flag value is no pattern"
        );
    }

    #[test]
    fn exact_keys_and_prefixes_are_included_and_excluded() {
        let p = policy(&["team", "org.example/*"], &["org.example/secret-*"]);
        assert!(p.allows("team"));
        assert!(!p.allows("teams"), "exact means exact");
        assert!(p.allows("org.example/cost-center"));
        assert!(!p.allows("org.example/secret-level"), "excluded");
        assert!(!p.allows("other.example/x"));
    }

    #[test]
    fn star_includes_everything_but_the_reserved_keys() {
        let p = policy(&["*"], &[]);
        assert!(p.allows("env"));
        assert!(p.allows("example.com/tier"));
        for reserved in [
            "app",
            "release",
            "helm",
            "heritage",
            "chart",
            "management.cattle.io/cluster-name",
            "fleet.cattle.io/x",
            "vclink.io/agent",
            "loft.sh/vcluster-project",
            "vcluster.loft.sh/namespace",
            "app.kubernetes.io/name",
        ] {
            assert!(!p.allows(reserved), "{reserved} is reserved");
        }
        // Naming a reserved key explicitly does not lift the exclusion.
        assert!(!policy(&["vclink.io/agent", "app"], &[]).allows("vclink.io/agent"));
        assert!(!policy(&["app"], &[]).allows("app"));
    }

    #[test]
    fn invalid_patterns_and_keys_are_refused() {
        let v = |s: &str| vec![s.to_string()];
        let e = LabelPolicy::new(&v("org.*/x"), &[]).unwrap_err();
        assert!(e.contains("org.*/x"), "{e}");
        assert!(LabelPolicy::new(&[], &v("a*b*")).is_err());
        let p = policy(&["*"], &[]);
        assert!(!p.allows("Bad Key"));
        assert!(
            !p.allows("UPPER.example/x"),
            "prefix must be a DNS subdomain"
        );
        assert!(!p.allows(&"x".repeat(64)));
        assert!(!p.allows("example.com/"));
        assert!(p.allows("Team_A.x-1"));
    }

    #[test]
    fn label_values_follow_kubernetes_syntax() {
        assert!(valid_value(""));
        assert!(valid_value("prod-eu_1.a"));
        assert!(!valid_value("-x"));
        assert!(!valid_value("a b"));
        assert!(!valid_value(&"v".repeat(64)));
    }
}
