//! Fleet's per-cluster processing of `helm.values`
//! (rancher/fleet `internal/cmd/controller/target/builder.go`, `preprocessHelmValues`):
//! 1. every string value starting with `global.fleet.clusterLabels.` becomes that label's
//!    value (empty when the cluster lacks it), in maps and in maps inside lists;
//! 2. the values are marshalled to YAML (`sigs.k8s.io/yaml`: JSON, then go-yaml, keys
//!    sorted), that text is executed as a Go `text/template` with delimiters `${` `}`,
//!    sprig functions and `missingkey=error`, and the output is parsed as YAML again.
//!
//! The template context is `.ClusterName`, `.ClusterNamespace`, `.ClusterLabels`,
//! `.ClusterAnnotations`, `.ClusterValues`. Implemented here is the subset a bundle
//! needs — field chains (`.ClusterLabels.key`), sprig `get`, `index`, string literals,
//! `${-`/`-}` trimming — and any other action is an error, so a fleet.yaml that uses more
//! fails this test instead of passing unchecked. The YAML emitter follows go-yaml's
//! choice of scalar style closely enough for the values a chart takes: a string is plain
//! unless it would read back as another type or breaks plain-scalar rules, then
//! single-quoted, and double-quoted when it holds control characters.

use serde_json::{Map, Value};

use super::BundleError;

/// Fleet's `clusterLabelPrefix`.
pub const CLUSTER_LABEL_PREFIX: &str = "global.fleet.clusterLabels.";

/// Step 1: `global.fleet.clusterLabels.<key>` strings.
pub fn process_label_values(values: &mut Value, labels: &Map<String, Value>) {
    if let Value::Object(map) = values {
        for (_, v) in map.iter_mut() {
            match v {
                Value::String(s) if s.starts_with(CLUSTER_LABEL_PREFIX) => {
                    let key = &s[CLUSTER_LABEL_PREFIX.len()..];
                    *v = labels
                        .get(key)
                        .cloned()
                        .unwrap_or(Value::String(String::new()));
                }
                Value::Object(_) => process_label_values(v, labels),
                Value::Array(items) => {
                    for item in items.iter_mut().filter(|i| i.is_object()) {
                        process_label_values(item, labels);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Step 2: template the marshalled values and parse the result.
pub fn process_template_values(values: &Value, context: &Value) -> Result<Value, BundleError> {
    let text = to_go_yaml(values);
    let rendered = execute(&text, context)?;
    serde_yaml_ng::from_str(&rendered).map_err(|e| {
        BundleError::Template(format!("rendered values are not YAML ({e}):\n{rendered}"))
    })
}

/// Executes `text` as a Go template with `${ }` delimiters over `context`.
pub fn execute(text: &str, context: &Value) -> Result<String, BundleError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let mut before = &rest[..start];
        let mut action = &rest[start + 2..];
        let end = action
            .find('}')
            .ok_or_else(|| BundleError::Template(format!("unclosed action in {rest:?}")))?;
        let mut after = &action[end + 1..];
        action = &action[..end];
        // Go trims whitespace next to "${- " and " -}".
        if let Some(a) = action.strip_prefix("- ") {
            before = before.trim_end();
            action = a;
        }
        if let Some(a) = action.strip_suffix(" -") {
            after = after.trim_start();
            action = a;
        }
        out.push_str(before);
        out.push_str(&eval(action.trim(), context)?);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// One action: `get <arg> "key"`, `index <arg> "k"...`, or a single argument.
fn eval(action: &str, ctx: &Value) -> Result<String, BundleError> {
    let words = split_words(action)?;
    let value = match words.first().map(String::as_str) {
        Some("get") if words.len() == 3 => {
            let dict = arg(&words[1], ctx)?;
            let key = literal(&words[2])?;
            // sprig `get`: the value, or "" when the key is missing.
            dict.get(&key)
                .cloned()
                .unwrap_or(Value::String(String::new()))
        }
        Some("index") if words.len() >= 3 => {
            let mut v = arg(&words[1], ctx)?;
            for k in &words[2..] {
                let key = literal(k)?;
                // Go's index on a map yields the zero value for a missing key.
                v = v.get(&key).cloned().unwrap_or(Value::Null);
            }
            v
        }
        Some(_) if words.len() == 1 => arg(&words[0], ctx)?,
        _ => {
            return Err(BundleError::Template(format!(
                "action `{action}` is outside the subset this test implements (field chains, get, index)"
            )));
        }
    };
    Ok(match value {
        Value::String(s) => s,
        Value::Null => "<no value>".into(),
        other => other.to_string(),
    })
}

fn arg(word: &str, ctx: &Value) -> Result<Value, BundleError> {
    if word.starts_with('"') {
        return literal(word).map(Value::String);
    }
    let Some(chain) = word.strip_prefix('.') else {
        return Err(BundleError::Template(format!(
            "unsupported argument `{word}`"
        )));
    };
    let mut v = ctx.clone();
    if chain.is_empty() {
        return Ok(v);
    }
    for field in chain.split('.') {
        // missingkey=error: a map key that is not there fails the render.
        v = v.get(field).cloned().ok_or_else(|| {
            BundleError::Template(format!("map has no entry for key {field:?} (in `{word}`)"))
        })?;
    }
    Ok(v)
}

fn literal(word: &str) -> Result<String, BundleError> {
    serde_json::from_str::<String>(word)
        .map_err(|_| BundleError::Template(format!("`{word}` is not a string literal")))
}

fn split_words(action: &str) -> Result<Vec<String>, BundleError> {
    let mut words = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            let mut w = String::from('"');
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                w.push(c);
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        w.push(e);
                    }
                } else if c == '"' {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(BundleError::Template(format!(
                    "unterminated string in `{action}`"
                )));
            }
            words.push(w);
        } else if c == '|' || c == '(' || c == ')' {
            return Err(BundleError::Template(format!(
                "pipelines and parentheses are outside this test's subset: `{action}`"
            )));
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            words.push(w);
        }
    }
    Ok(words)
}

/// YAML text of `v` as `sigs.k8s.io/yaml.Marshal` writes it (block style, sorted keys,
/// two-space indentation, list items at their key's indentation).
pub fn to_go_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if map.is_empty() => out.push_str("{}\n"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                out.push_str(&pad);
                out.push_str(&scalar(k));
                out.push(':');
                emit_child(&map[k], indent, out);
            }
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]\n"),
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => emit_child(item, indent, out),
                }
            }
        }
        other => {
            out.push_str(&scalar_value(other));
            out.push('\n');
        }
    }
}

fn emit_child(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit(v, indent + 2, out);
        }
        // go-yaml writes a sequence under a key at the key's own indentation.
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit(v, indent, out);
        }
        _ => {
            out.push(' ');
            emit(v, indent, out);
        }
    }
}

fn scalar_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        _ => String::new(),
    }
}

/// go-yaml's scalar style for a string (encode.go `stringv` + emitterc.go
/// `yaml_emitter_analyze_scalar`, for the block context values are written in).
fn scalar(s: &str) -> String {
    let resolves_elsewhere = matches!(
        s,
        "" | "~"
            | "null"
            | "Null"
            | "NULL"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
            | "y"
            | "Y"
            | "n"
            | "N"
    ) || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o");
    let control = s.chars().any(|c| c.is_control());
    let first_indicator = s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c));
    let plain_ok = !resolves_elsewhere
        && !control
        && !first_indicator
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':');
    if plain_ok {
        s.to_string()
    } else if control {
        serde_json::to_string(s).unwrap_or_default()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({"ClusterName": "prod", "ClusterNamespace": "fleet-default",
            "ClusterLabels": {"management.cattle.io/cluster-name": "c-m-ab12cd34", "env": "prod"},
            "ClusterAnnotations": {}, "ClusterValues": {}})
    }

    #[test]
    fn the_cluster_id_template_renders_like_fleet() {
        let values = json!({"clusterId": "${ get .ClusterLabels \"management.cattle.io/cluster-name\" }",
            "hub": {"url": "https://h:8443", "caBundle": ""}, "list": [{"a": "${ .ClusterName }"}]});
        let text = to_go_yaml(&values);
        assert!(
            text.contains(
                "clusterId: ${ get .ClusterLabels \"management.cattle.io/cluster-name\" }"
            ),
            "plain, so the action survives marshalling: {text}"
        );
        let out = process_template_values(&values, &ctx()).expect("render");
        assert_eq!(out["clusterId"], "c-m-ab12cd34");
        assert_eq!(out["hub"]["caBundle"], "");
        assert_eq!(out["list"][0]["a"], "prod");
    }

    #[test]
    fn missing_keys_follow_go_semantics() {
        assert_eq!(
            execute("${ get .ClusterLabels \"nope\" }", &ctx()).expect("get"),
            ""
        );
        assert!(
            execute("${ .ClusterLabels.nope }", &ctx()).is_err(),
            "missingkey=error"
        );
        assert!(
            execute("${ .ClusterName | upper }", &ctx()).is_err(),
            "outside the subset"
        );
        assert_eq!(
            execute("a ${- .ClusterName -} b", &ctx()).expect("trim"),
            "aprodb"
        );
    }

    #[test]
    fn label_prefix_strings_are_replaced() {
        let labels = ctx()["ClusterLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut v = json!({"a": "global.fleet.clusterLabels.env", "b": {"c": "global.fleet.clusterLabels.x"}});
        process_label_values(&mut v, &labels);
        assert_eq!(v, json!({"a": "prod", "b": {"c": ""}}));
    }
}
