//! Config errors: one problem pinned to `file:line:column` and a key path, and the
//! list of every problem found in one load.
//!
//! Inside the module, problems are first collected as [`Issue`]s (a key path and a
//! message); `config::load_from_str` turns them into [`ConfigError`]s once the
//! location index can place them in the file.

use std::fmt;

use super::location::KeyPath;

/// One problem in a config file.
///
/// Displays as `config.yaml:14:7: pools.web.restart.backoff_max: invalid duration "5 sec" (…)`;
/// the line and column are left out when unknown, the path when it is the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line, when the problem could be placed in the file.
    pub line: Option<usize>,
    /// 1-based column, when the problem could be placed in the file.
    pub column: Option<usize>,
    /// Key path such as `pools.web.restart.backoff_max` or `routes[1].pool`; empty for
    /// the whole file.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    fn position(&self) -> (usize, usize) {
        (self.line.unwrap_or(0), self.column.unwrap_or(0))
    }
}

/// Every problem found while loading one config file, sorted by line then column.
///
/// Displays one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Sorts by position (errors without one first) and drops exact duplicates.
    pub(crate) fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(ConfigError::position);
        errors.dedup();
        ConfigErrors(errors)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The field is public, so do not trust it to be sorted already.
        let mut sorted: Vec<&ConfigError> = self.0.iter().collect();
        sorted.sort_by_key(|e| e.position());
        for (i, error) in sorted.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A problem before it has been placed in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Issue {
    pub path: KeyPath,
    /// Point at the key rather than its value (unknown keys, bad names).
    pub at_key: bool,
    pub message: String,
}

impl Issue {
    pub(super) fn at(path: KeyPath, message: impl Into<String>) -> Self {
        Issue {
            path,
            at_key: false,
            message: message.into(),
        }
    }

    pub(super) fn at_key(path: KeyPath, message: impl Into<String>) -> Self {
        Issue {
            path,
            at_key: true,
            message: message.into(),
        }
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(super) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= limit && *c != word)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `message` followed by `; did you mean "x"?` when one of `candidates` is close.
pub(super) fn with_suggestion(message: String, word: &str, candidates: &[&str]) -> String {
    match suggest(word, candidates) {
        Some(s) => format!("{message}; did you mean {s:?}?"),
        None => message,
    }
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, so
/// "wrokers" is one edit from "workers".
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Typos are short; long inputs are not worth a quadratic table.
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: Option<usize>, column: Option<usize>, path: &str) -> ConfigError {
        ConfigError {
            file: "config.yaml".into(),
            line,
            column,
            path: path.into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn display_formats() {
        assert_eq!(
            error(Some(14), Some(7), "pools.web.ports").to_string(),
            "config.yaml:14:7: pools.web.ports: bad"
        );
        assert_eq!(
            error(Some(1), Some(1), "").to_string(),
            "config.yaml:1:1: bad"
        );
        assert_eq!(error(None, None, "").to_string(), "config.yaml: bad");
    }

    #[test]
    fn errors_display_sorted_one_per_line() {
        let errors = ConfigErrors(vec![
            error(Some(9), Some(1), "b"),
            error(Some(2), Some(5), "a"),
            error(Some(2), Some(3), "c"),
        ]);
        assert_eq!(
            errors.to_string(),
            "config.yaml:2:3: c: bad\nconfig.yaml:2:5: a: bad\nconfig.yaml:9:1: b: bad"
        );
    }

    #[test]
    fn suggestions() {
        let keys = ["command", "workers", "ports"];
        assert_eq!(suggest("wrokers", &keys), Some("workers"));
        assert_eq!(suggest("port", &keys), Some("ports"));
        assert_eq!(suggest("zzz", &keys), None);
        assert_eq!(suggest("wbe", &["web", "api"]), Some("web"));
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
