//! RBAC rule logic for the CRTB escalation check (docs/rancher.md: Projects and role bindings): a role
//! template's rules with inherited templates resolved, each rule expanded into atomic
//! requests, and RBAC's "covers" test for rules granted by the user's CRTBs.

use serde_json::Value;

/// One PolicyRule as stored in a RoleTemplate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Self {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// A short description for denial messages.
    pub fn describe(&self) -> String {
        if self.non_resource_urls.is_empty() {
            format!(
                "verbs={:?} apiGroups={:?} resources={:?}",
                self.verbs, self.api_groups, self.resources
            )
        } else {
            format!(
                "verbs={:?} nonResourceURLs={:?}",
                self.verbs, self.non_resource_urls
            )
        }
    }
}

/// One atomic permission.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

/// Every atomic permission a rule grants.
pub fn expand(rule: &Rule) -> Vec<Attr> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for path in &rule.non_resource_urls {
            out.push(Attr::NonResource {
                verb: verb.clone(),
                path: path.clone(),
            });
        }
        for group in &rule.api_groups {
            for res in &rule.resources {
                let (resource, subresource) = res.split_once('/').unwrap_or((res, ""));
                let names: Vec<String> = if rule.resource_names.is_empty() {
                    vec![String::new()]
                } else {
                    rule.resource_names.clone()
                };
                for name in names {
                    out.push(Attr::Resource {
                        verb: verb.clone(),
                        group: group.clone(),
                        resource: resource.to_string(),
                        subresource: subresource.to_string(),
                        name,
                    });
                }
            }
        }
    }
    out
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// RBAC's match: does `rule` allow `attr`? (`*` in the request needs `*` in the rule.)
pub fn covers(rule: &Rule, attr: &Attr) -> bool {
    match attr {
        Attr::NonResource { verb, path } => {
            has(&rule.verbs, verb)
                && rule.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || u == path
                        || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                })
        }
        Attr::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
        } => {
            let full = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            has(&rule.verbs, verb)
                && has(&rule.api_groups, group)
                && (has(&rule.resources, &full)
                    || (!subresource.is_empty()
                        && rule
                            .resources
                            .iter()
                            .any(|r| *r == format!("*/{subresource}"))))
                && (rule.resource_names.is_empty()
                    || (!name.is_empty() && rule.resource_names.contains(name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcard_needs_wildcard() {
        let owner =
            Rule::from_json(&json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        let reader = Rule::from_json(
            &json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}),
        );
        for a in expand(&owner) {
            assert!(covers(&owner, &a));
            assert!(!covers(&reader, &a));
        }
        for a in expand(&reader) {
            assert!(covers(&owner, &a));
            assert!(covers(&reader, &a));
        }
        let nr = Rule::from_json(&json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert_eq!(expand(&nr).len(), 1);
        assert!(covers(
            &nr,
            &Attr::NonResource {
                verb: "get".into(),
                path: "/healthz".into()
            }
        ));
    }
}
