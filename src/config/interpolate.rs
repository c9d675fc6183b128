//! Environment substitution: `${VAR}`, `${VAR:-default}` and the `$${` escape.
//!
//! Runs once, on the parsed string values (never on map keys or the raw text, so
//! positions stay right). A plain (unquoted) scalar that contained a substitution is
//! re-typed the way YAML would have typed the result, so `workers: ${WORKERS:-4}` is
//! the integer 4; a quoted scalar always stays a string.

use serde_yaml::Value;

use super::error::Issue;
use super::location::{key_text, KeyPath, LocationIndex};

/// Substitute every string value under `value`. Values that cannot be substituted
/// are left alone and reported; the caller removes them.
pub(super) fn interpolate(
    value: &mut Value,
    index: &mut LocationIndex,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Issue> {
    let mut issues = Vec::new();
    walk(value, &KeyPath::root(), index, env, &mut issues);
    issues
}

fn walk(
    value: &mut Value,
    path: &KeyPath,
    index: &mut LocationIndex,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
) {
    match value {
        Value::String(s) => match substitute(s, env) {
            Ok(None) => {}
            Ok(Some(new)) => {
                index.set_text(path, &new);
                *value = if index.is_plain(path) {
                    retype(new)
                } else {
                    Value::String(new)
                };
            }
            Err(message) => issues.push(Issue::at(path.clone(), message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &path.index(i), index, env, issues);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                if let Some(k) = key_text(k) {
                    walk(v, &path.key(k), index, env, issues);
                }
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, index, env, issues),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Expand `${VAR}`, `${VAR:-default}` and `$${` in `text`.
///
/// `Ok(None)` when there was nothing to expand. `:-` uses the default when the
/// variable is unset or empty, as in the shell.
pub(super) fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut missing: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!(
                    r#"unterminated "${{" in {text:?} (close it with "}}", or write "$${{" for a literal "${{")"#
                ));
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(format!(
                    r#"invalid variable name {name:?} in "${{{inner}}}" (expected letters, digits and "_", not starting with a digit; write "$${{" for a literal "${{")"#
                ));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => missing.push(name),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    match missing.as_slice() {
        [] => Ok(Some(out)),
        [name] => Err(format!(
            "environment variable {name:?} is not set and has no default (set it, or write ${{{name}:-default}})"
        )),
        names => Err(format!(
            "environment variables {} are not set and have no default (set them, or write ${{NAME:-default}})",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Type a substituted plain scalar as YAML 1.2 (serde_yaml) would: null, a
/// boolean, a number, or else a string. Never a collection.
fn retype(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => match text.parse::<serde_yaml::Number>() {
            // serde_yaml's parser ignores surrounding whitespace YAML would keep.
            Ok(n) if text.trim() == text => Value::Number(n),
            _ => Value::String(text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            "N" => Some("4".into()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<Option<String>, String> {
        substitute(text, &env)
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(sub("plain"), Ok(None));
        assert_eq!(sub("cost $5"), Ok(None));
        assert_eq!(sub("${HOME}/app"), Ok(Some("/home/me/app".into())));
        assert_eq!(sub("${UNSET:-x:y}"), Ok(Some("x:y".into())));
        assert_eq!(sub("${HOME:-x}"), Ok(Some("/home/me".into())));
        assert_eq!(sub("${EMPTY:-d}"), Ok(Some("d".into())));
        assert_eq!(sub("${EMPTY}"), Ok(Some(String::new())));
        assert_eq!(sub("${UNSET:-}"), Ok(Some(String::new())));
        assert_eq!(sub("a$b${N}c$"), Ok(Some("a$b4c$".into())));
    }

    #[test]
    fn escape_writes_a_literal() {
        assert_eq!(sub("$${HOME}"), Ok(Some("${HOME}".into())));
        // Only `$${` is special: a `$` before it stays as it is.
        assert_eq!(sub("$$${N}"), Ok(Some("$${N}".into())));
        assert_eq!(sub("$${A}-${N}"), Ok(Some("${A}-4".into())));
    }

    #[test]
    fn errors() {
        assert_eq!(
            sub("${DB_URL}"),
            Err(r#"environment variable "DB_URL" is not set and has no default (set it, or write ${DB_URL:-default})"#.into())
        );
        assert!(sub("${A}${B}")
            .unwrap_err()
            .starts_with(r#"environment variables "A", "B" are not set"#));
        assert!(sub("${HOME")
            .unwrap_err()
            .starts_with(r#"unterminated "${" in "${HOME""#));
        assert!(sub("${1X}")
            .unwrap_err()
            .starts_with(r#"invalid variable name "1X""#));
        assert!(sub("${}").is_err());
    }

    #[test]
    fn retyping() {
        assert_eq!(retype("4".into()), Value::Number(4.into()));
        assert_eq!(retype("true".into()), Value::Bool(true));
        assert_eq!(retype("".into()), Value::Null);
        assert_eq!(retype("4s".into()), Value::String("4s".into()));
        assert_eq!(retype(" 4".into()), Value::String(" 4".into()));
        assert_eq!(retype("[1, 2]".into()), Value::String("[1, 2]".into()));
    }
}
