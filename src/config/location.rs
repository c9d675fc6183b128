//! Where things are in the config file: key paths (`pools.web.ports`,
//! `routes[1].pool`, `proxy.listen[0]`) and an index from each path to the line and
//! column of its key and value.
//!
//! serde_yaml's `Value` forgets positions and scalar styles, so the index is built
//! separately from yaml-rust2's parser events over the same text. It is best effort:
//! if yaml-rust2 disagrees with serde_yaml about the text, errors simply lose their
//! position rather than the load failing.

use std::collections::HashMap;
use std::fmt;

use serde_yaml::Value;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One step in a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the root of the file to one value. Empty for the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(super) fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub(super) fn key(&self, key: impl Into<String>) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.into()));
        KeyPath(segs)
    }

    pub(super) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }

    pub(super) fn segs(&self) -> &[Seg] {
        &self.0
    }

    pub(super) fn from_segs(segs: Vec<Seg>) -> Self {
        KeyPath(segs)
    }

    pub(super) fn parent(&self) -> Option<KeyPath> {
        let (_, rest) = self.0.split_last()?;
        Some(KeyPath(rest.to_vec()))
    }

    /// The last segment, when it is a key.
    pub(super) fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// True when `self` is `other` or lies under it.
    pub(super) fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The path serde_path_to_error reports, cut at the first segment it could not
    /// name (a non-string map key).
    pub(super) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let mut segs = Vec::new();
        for seg in path.iter() {
            match seg {
                Segment::Seq { index } => segs.push(Seg::Index(*index)),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    segs.push(Seg::Key(key.clone()))
                }
                Segment::Unknown => break,
            }
        }
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The line and column of the value at `path` (as displayed, e.g.
/// `pools.web.command[0]`) in config text, for messages about a valid config.
pub fn value_position(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut key = KeyPath::root();
    for part in path.split('.') {
        let (name, indexes) = part.split_once('[').unwrap_or((part, ""));
        key = key.key(name);
        for index in indexes.split('[') {
            if let Some(n) = index.strip_suffix(']') {
                key = key.index(n.parse().ok()?);
            }
        }
    }
    let mark = LocationIndex::build(text).locate(&key, false)?;
    Some((mark.line, mark.column))
}

/// The text a scalar map key is addressed by in a key path.
pub(super) fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Tagged(t) => key_text(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Mark {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum NodeKind {
    Scalar { plain: bool, text: String },
    Collection,
    Alias,
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    key: Option<Mark>,
    value: Mark,
    kind: NodeKind,
}

/// Key path → position of its key and value, plus each scalar's style and text.
#[derive(Debug, Default)]
pub(super) struct LocationIndex {
    nodes: HashMap<KeyPath, Node>,
}

impl LocationIndex {
    /// Index the first YAML document in `text`.
    pub(super) fn build(text: &str) -> Self {
        // The index is optional; a panic inside the YAML parser on hostile input must
        // cost positions, not the load.
        std::panic::catch_unwind(|| Builder::default().run(text)).unwrap_or_default()
    }

    /// Where to point for a problem at `path`: its key or value if indexed,
    /// otherwise the nearest indexed ancestor's key.
    pub(super) fn locate(&self, path: &KeyPath, at_key: bool) -> Option<Mark> {
        if let Some(node) = self.nodes.get(path) {
            let prefer_key = at_key || !matches!(node.kind, NodeKind::Scalar { .. });
            return match (prefer_key, node.key) {
                (true, Some(key)) => Some(key),
                _ => Some(node.value),
            };
        }
        let mut current = path.parent();
        while let Some(p) = current {
            if let Some(node) = self.nodes.get(&p) {
                return Some(node.key.unwrap_or(node.value));
            }
            current = p.parent();
        }
        None
    }

    /// Whether the value at `path` was written as a plain (unquoted) scalar.
    pub(super) fn is_plain(&self, path: &KeyPath) -> bool {
        matches!(
            self.nodes.get(path),
            Some(Node {
                kind: NodeKind::Scalar { plain: true, .. },
                ..
            })
        )
    }

    /// The text of a plain scalar as written, e.g. `3.10` where serde_yaml saw the
    /// number 3.1.
    pub(super) fn plain_text(&self, path: &KeyPath) -> Option<&str> {
        match self.nodes.get(path) {
            Some(Node {
                kind: NodeKind::Scalar { plain: true, text },
                ..
            }) => Some(text),
            _ => None,
        }
    }

    /// Record the text a scalar has after env substitution.
    pub(super) fn set_text(&mut self, path: &KeyPath, new_text: &str) {
        if let Some(Node {
            kind: NodeKind::Scalar { text, .. },
            ..
        }) = self.nodes.get_mut(path)
        {
            new_text.clone_into(text);
        }
    }
}

enum Frame {
    Map {
        path: KeyPath,
        /// The key whose value comes next; `None` while a key is expected, or when
        /// the key was not a scalar (then its value is skipped).
        key: Option<(Option<String>, Mark)>,
        first_key_seen: bool,
    },
    Seq {
        path: KeyPath,
        next: usize,
    },
    /// Inside something that has no key path (a complex key or its value).
    Skip {
        depth: usize,
    },
}

#[derive(Default)]
struct Builder {
    index: LocationIndex,
    stack: Vec<Frame>,
    root_done: bool,
}

impl Builder {
    fn run(mut self, text: &str) -> LocationIndex {
        let mut parser = Parser::new_from_str(text);
        // Guards against a parser that stops making progress; real documents
        // produce far fewer events than this.
        let budget = text.len().saturating_mul(8).saturating_add(64);
        for _ in 0..budget {
            match parser.next_token() {
                Ok((Event::StreamEnd | Event::DocumentEnd, _)) | Err(_) => break,
                Ok((event, mark)) => self.on_event(event, mark.into()),
            }
        }
        self.index
    }

    fn on_event(&mut self, event: Event, mark: Mark) {
        match event {
            Event::Scalar(text, style, _, _) => {
                let plain = style == TScalarStyle::Plain;
                self.on_node(mark, NodeKind::Scalar { plain, text }, false);
            }
            Event::Alias(_) => {
                self.on_node(mark, NodeKind::Alias, false);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(event, Event::MappingStart(..));
                if let Some(Frame::Skip { depth }) = self.stack.last_mut() {
                    *depth += 1;
                    return;
                }
                match self.on_node(mark, NodeKind::Collection, true) {
                    Some(path) if is_map => self.stack.push(Frame::Map {
                        path,
                        key: None,
                        first_key_seen: false,
                    }),
                    Some(path) => self.stack.push(Frame::Seq { path, next: 0 }),
                    None => self.stack.push(Frame::Skip { depth: 1 }),
                }
            }
            Event::MappingEnd | Event::SequenceEnd => match self.stack.last_mut() {
                Some(Frame::Skip { depth }) if *depth > 1 => *depth -= 1,
                Some(_) => {
                    self.stack.pop();
                }
                None => {}
            },
            _ => {}
        }
    }

    /// Handle a node in whatever position it appears; returns its path when it has
    /// one and it is a collection to descend into.
    fn on_node(&mut self, mark: Mark, kind: NodeKind, collection: bool) -> Option<KeyPath> {
        let (path, key_mark) = match self.stack.last_mut() {
            None if self.root_done => return None,
            None => {
                self.root_done = true;
                (KeyPath::root(), None)
            }
            Some(Frame::Skip { .. }) => return None,
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                (p, None)
            }
            Some(Frame::Map {
                path,
                key,
                first_key_seen,
            }) => match key.take() {
                // This node is a key.
                None => {
                    let text = match &kind {
                        NodeKind::Scalar { text, .. } => Some(text.clone()),
                        _ => None,
                    };
                    *key = Some((text, mark));
                    // A block mapping's start mark lies after its first key; the
                    // first key is the better place to point at.
                    if !*first_key_seen {
                        *first_key_seen = true;
                        let map_path = path.clone();
                        if let Some(node) = self.index.nodes.get_mut(&map_path) {
                            node.value = node.value.min(mark);
                        }
                    }
                    return None;
                }
                Some((Some(k), key_mark)) => (path.key(k), Some(key_mark)),
                Some((None, _)) => return None,
            },
        };
        self.index.nodes.insert(
            path.clone(),
            Node {
                key: key_mark,
                value: mark,
                kind,
            },
        );
        collection.then_some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> KeyPath {
        let mut path = KeyPath::root();
        for part in s {
            path = match part.parse::<usize>() {
                Ok(i) => path.index(i),
                Err(_) => path.key(*part),
            };
        }
        path
    }

    fn at(line: usize, column: usize) -> Option<Mark> {
        Some(Mark { line, column })
    }

    const TEXT: &str = "\
proxy:
  listen: [\"0.0.0.0:80\", '[::]:80']
pools:
  web:
    command:
      - python3
      - 3.10
    ports: 9001-9002
routes:
  - {host: a.com, pool: web}
";

    #[test]
    fn value_positions_by_displayed_path() {
        assert_eq!(value_position(TEXT, "pools.web.command[0]"), Some((6, 9)));
        assert_eq!(value_position(TEXT, "proxy.listen[1]"), Some((2, 26)));
        assert_eq!(value_position(TEXT, "pools.web.ports"), Some((8, 12)));
    }

    #[test]
    fn paths_render_like_serde_path_to_error() {
        assert_eq!(p(&["pools", "web", "ports"]).to_string(), "pools.web.ports");
        assert_eq!(p(&["routes", "1", "pool"]).to_string(), "routes[1].pool");
        assert_eq!(p(&["proxy", "listen", "0"]).to_string(), "proxy.listen[0]");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn values_and_keys_are_located() {
        let index = LocationIndex::build(TEXT);
        assert_eq!(
            index.locate(&p(&["pools", "web", "ports"]), false),
            at(8, 12)
        );
        assert_eq!(index.locate(&p(&["pools", "web", "ports"]), true), at(8, 5));
        assert_eq!(
            index.locate(&p(&["proxy", "listen", "1"]), false),
            at(2, 26)
        );
        assert_eq!(
            index.locate(&p(&["routes", "0", "pool"]), false),
            at(10, 25)
        );
        assert_eq!(
            index.locate(&p(&["pools", "web", "command", "1"]), false),
            at(7, 9)
        );
        // Collections point at their key.
        assert_eq!(index.locate(&p(&["pools", "web"]), false), at(4, 3));
        assert_eq!(index.locate(&KeyPath::root(), false), at(1, 1));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_parent_key() {
        let index = LocationIndex::build(TEXT);
        assert_eq!(
            index.locate(&p(&["pools", "web", "workers"]), false),
            at(4, 3)
        );
        assert_eq!(index.locate(&p(&["nothing", "here"]), false), at(1, 1));
    }

    #[test]
    fn scalar_styles_and_text() {
        let index = LocationIndex::build(TEXT);
        assert!(index.is_plain(&p(&["pools", "web", "ports"])));
        assert!(!index.is_plain(&p(&["proxy", "listen", "0"])));
        assert_eq!(
            index.plain_text(&p(&["pools", "web", "command", "1"])),
            Some("3.10")
        );
    }

    #[test]
    fn complex_keys_are_skipped() {
        let index = LocationIndex::build("? [a, b]\n: {c: 1}\nd: 2\n");
        assert_eq!(index.locate(&p(&["d"]), false), at(3, 4));
    }

    #[test]
    fn bad_text_gives_a_partial_index() {
        let index = LocationIndex::build("a: 1\nb: [");
        assert_eq!(index.locate(&p(&["a"]), false), at(1, 4));
        assert_eq!(
            LocationIndex::build("").locate(&KeyPath::root(), false),
            None
        );
    }
}
