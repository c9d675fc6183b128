//! The Prometheus text format (version 0.0.4), and the OpenMetrics 1.0 text a worker
//! may send instead, parsed strictly into families of samples for merging.
//!
//! No maintained crate parses this format well enough to merge it: the ones on
//! crates.io split labels on `,` and `=` (so escaped values break), skip lines
//! they do not understand, lose a histogram's `_sum` and `_count`, or carry a
//! licence (LGPL) this project cannot ship. This one is small and strict: any
//! malformed line rejects the whole text, with its line number, so a broken worker
//! is counted (`reason="parse"`) and keeps its last good values.
//!
//! Label values are kept as written, escapes included (the format has exactly one
//! spelling for each value), and a sample's labels are sorted by name, so equal
//! label sets from different workers compare equal as strings. Timestamps and
//! exemplars are dropped: a merged value is as of the scrape. OpenMetrics `_created`
//! series, and the `X_created` gauges text 0.0.4 clients write beside a counter,
//! histogram or summary `X`, are dropped too: they change with every restart and
//! mean nothing summed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// The type of a metric family, as merging sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
    /// OpenMetrics `gaugehistogram`: a histogram that goes up and down.
    GaugeHistogram,
}

impl Kind {
    /// `# TYPE` in text 0.0.4 (which has no gauge histograms).
    pub(crate) fn type_text(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram | Kind::GaugeHistogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }

    /// A `# TYPE` word of either format. OpenMetrics `info` and `stateset` are
    /// gauges in text 0.0.4, `unknown` is untyped.
    fn parse(word: &str) -> Option<Kind> {
        Some(match word {
            "counter" => Kind::Counter,
            "gauge" | "info" | "stateset" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "gaugehistogram" => Kind::GaugeHistogram,
            "summary" => Kind::Summary,
            "untyped" | "unknown" => Kind::Untyped,
            _ => return None,
        })
    }

    /// Whether `sample` is a sample name of a family `family` of this kind.
    fn owns(self, family: &str, sample: &str) -> bool {
        let Some(suffix) = sample.strip_prefix(family) else {
            return false;
        };
        let allowed: &[&str] = match self {
            Kind::Counter => &["", "_total", "_created"],
            Kind::Gauge => &["", "_info"],
            Kind::Untyped => &[""],
            Kind::Histogram | Kind::GaugeHistogram => {
                &["_bucket", "_sum", "_count", "_created", "_gsum", "_gcount"]
            }
            Kind::Summary => &["", "_sum", "_count", "_created"],
        };
        allowed.contains(&suffix)
    }
}

/// One sample: its full name (`x_bucket`), its labels as `a="1",b="2"` (sorted by
/// name, escapes as sent, no braces), and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub name: String,
    pub kind: Kind,
    /// As written (escaped).
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub line: usize,
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// Parse `text`. Labels named in `reserved` are renamed `exported_<name>` (as
/// Prometheus does with `honor_labels: false`), since forkyard adds its own.
pub(crate) fn parse(text: &str, reserved: &[&str]) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut current: Option<usize> = None;
    let mut typed = std::collections::HashSet::new();
    let mut pairs: Vec<(Cow<str>, &str)> = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let no = n + 1;
        let err = |what: String| ParseError { line: no, what };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment == "EOF" {
                break;
            }
            let (word, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
            if word != "HELP" && word != "TYPE" {
                continue; // a comment, or an OpenMetrics `# UNIT`
            }
            let rest = rest.trim_start();
            let (name, tail) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if !is_metric_name(name) {
                return Err(err(format!("invalid metric name {name:?} in # {word}")));
            }
            let i = *index.entry(name.to_owned()).or_insert_with(|| {
                families.push(Family {
                    name: name.to_owned(),
                    kind: Kind::Untyped,
                    help: None,
                    samples: Vec::new(),
                });
                families.len() - 1
            });
            let family = &mut families[i];
            if word == "HELP" {
                if family.help.is_some() {
                    return Err(err(format!("second # HELP for {name}")));
                }
                family.help = Some(tail.to_owned());
            } else {
                if !typed.insert(i) {
                    return Err(err(format!("second # TYPE for {name}")));
                }
                if !family.samples.is_empty() {
                    return Err(err(format!("# TYPE for {name} after its samples")));
                }
                family.kind = Kind::parse(tail.trim())
                    .ok_or_else(|| err(format!("unknown metric type {:?}", tail.trim())))?;
            }
            current = Some(i);
            continue;
        }
        let sample = sample(line, reserved, &mut pairs).map_err(err)?;
        let owner = current
            .filter(|&i| families[i].kind.owns(&families[i].name, &sample.name))
            .or_else(|| {
                base_names(&sample.name)
                    .filter_map(|base| index.get(base).copied())
                    .find(|&i| families[i].kind.owns(&families[i].name, &sample.name))
            });
        let i = match owner {
            Some(i) => i,
            None if index.contains_key(&sample.name) => {
                let kind = families[index[&sample.name]].kind.type_text();
                return Err(err(format!(
                    "sample {} does not fit the {kind} family of that name",
                    sample.name
                )));
            }
            None => {
                families.push(Family {
                    name: sample.name.clone(),
                    kind: Kind::Untyped,
                    help: None,
                    samples: Vec::new(),
                });
                index.insert(sample.name.clone(), families.len() - 1);
                families.len() - 1
            }
        };
        check_sample(&families[i], &sample).map_err(err)?;
        current = Some(i);
        families[i].samples.push(sample);
    }
    Ok(tidy(families))
}

/// The family names a sample name could belong to.
fn base_names(sample: &str) -> impl Iterator<Item = &str> {
    const SUFFIXES: [&str; 8] = [
        "_total", "_created", "_bucket", "_sum", "_count", "_gsum", "_gcount", "_info",
    ];
    std::iter::once(sample).chain(SUFFIXES.iter().filter_map(move |s| sample.strip_suffix(s)))
}

/// A histogram bucket needs `le`, a summary quantile `quantile`.
fn check_sample(family: &Family, sample: &Sample) -> Result<(), String> {
    let needs = match family.kind {
        Kind::Histogram | Kind::GaugeHistogram if sample.name.ends_with("_bucket") => "le",
        Kind::Summary if sample.name == family.name => "quantile",
        _ => return Ok(()),
    };
    let has = sample
        .labels
        .split(',')
        .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k == needs));
    if has {
        Ok(())
    } else {
        Err(format!("{} has no {needs:?} label", sample.name))
    }
}

/// Drop `_created` series and empty families; name counter and info families
/// after their samples (OpenMetrics `x` with samples `x_total` is text 0.0.4's
/// `x_total`), so both formats merge into one family.
fn tidy(mut families: Vec<Family>) -> Vec<Family> {
    let summed = |k: Kind| matches!(k, Kind::Counter | Kind::Histogram | Kind::Summary);
    for f in &mut families {
        if summed(f.kind) || f.kind == Kind::GaugeHistogram {
            let created = format!("{}_created", f.name);
            f.samples.retain(|s| s.name != created);
        }
        for suffix in ["_total", "_info"] {
            let full = format!("{}{suffix}", f.name);
            let fits = (suffix == "_total") == (f.kind == Kind::Counter);
            if fits && !f.samples.is_empty() && f.samples.iter().all(|s| s.name == full) {
                f.name = full;
            }
        }
    }
    let created_of: Vec<String> = families
        .iter()
        .filter(|f| summed(f.kind))
        .map(|f| {
            let base = f.name.strip_suffix("_total").unwrap_or(&f.name);
            format!("{base}_created")
        })
        .collect();
    let is_created =
        |f: &Family| matches!(f.kind, Kind::Gauge | Kind::Untyped) && created_of.contains(&f.name);
    families.retain(|f| !f.samples.is_empty() && !is_created(f));
    families
}

fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn name_len(s: &str, colon: bool) -> usize {
    s.bytes()
        .enumerate()
        .take_while(|&(i, b)| {
            b.is_ascii_alphabetic()
                || b == b'_'
                || (colon && b == b':')
                || (i > 0 && b.is_ascii_digit())
        })
        .count()
}

/// One sample line: `name{labels} value [timestamp] [# exemplar]`.
fn sample<'a>(
    line: &'a str,
    reserved: &[&str],
    pairs: &mut Vec<(Cow<'a, str>, &'a str)>,
) -> Result<Sample, String> {
    let n = name_len(line, true);
    if n == 0 {
        return Err(format!("expected a metric name: {:?}", cut(line)));
    }
    let name = &line[..n];
    let mut rest = &line[n..];
    pairs.clear();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = labels(inner, pairs)?;
    }
    let rest = rest
        .strip_prefix([' ', '\t'])
        .ok_or_else(|| format!("expected a space and a value after {name}"))?
        .trim_start();
    let mut words = rest.split_ascii_whitespace();
    let value_text = words.next().ok_or_else(|| format!("{name} has no value"))?;
    let value = parse_value(value_text)
        .ok_or_else(|| format!("invalid value {value_text:?} for {name}"))?;
    match words.next() {
        None | Some("#") => {}
        Some(ts) if ts.parse::<f64>().is_ok() => match words.next() {
            None | Some("#") => {}
            Some(extra) => return Err(format!("unexpected {extra:?} after {name}'s timestamp")),
        },
        Some(other) => return Err(format!("invalid timestamp {other:?} for {name}")),
    }
    for (key, _) in pairs.iter_mut() {
        if reserved.contains(&key.as_ref()) {
            *key = Cow::Owned(format!("exported_{key}"));
        }
    }
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut labels = String::with_capacity(line.len());
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            if pairs[i - 1].0 == *key {
                return Err(format!("label {key:?} twice in {name}"));
            }
            labels.push(',');
        }
        labels.push_str(key);
        labels.push_str("=\"");
        labels.push_str(value);
        labels.push('"');
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The label pairs after `{`; returns what follows the `}`.
fn labels<'a>(mut s: &'a str, pairs: &mut Vec<(Cow<'a, str>, &'a str)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let n = name_len(s, false);
        if n == 0 {
            return Err(format!("expected a label name or }}: {:?}", cut(s)));
        }
        let key = &s[..n];
        s = s[n..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("expected = after label {key}"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted value for label {key}"))?;
        let bytes = s.as_bytes();
        let mut i = 0;
        loop {
            match bytes.get(i) {
                None => return Err(format!("unterminated value of label {key}")),
                Some(b'"') => break,
                Some(b'\\') => match bytes.get(i + 1) {
                    Some(b'\\' | b'"' | b'n') => i += 2,
                    _ => return Err(format!("invalid escape in the value of label {key}")),
                },
                Some(_) => i += 1,
            }
        }
        pairs.push((Cow::Borrowed(key), &s[..i]));
        s = s[i + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("expected , or }} after label {key}"));
        }
    }
}

/// A Go `ParseFloat` value: decimal, `+Inf`, `-Inf`, `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// The start of a line for an error message.
fn cut(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Vec<Family> {
        parse(text, &["pool", "worker"]).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn samples(f: &Family) -> Vec<(String, String, f64)> {
        f.samples
            .iter()
            .map(|s| (s.name.clone(), s.labels.clone(), s.value))
            .collect()
    }

    /// What prometheus_client (Python) writes in text 0.0.4.
    const PYTHON: &str = r#"# HELP app_requests_total Requests served.
# TYPE app_requests_total counter
app_requests_total{path="/",method="GET"} 3.0
app_requests_total{method="POST",path="/a,b=\"c\"\\"} 1.0
# HELP app_requests_created Requests served.
# TYPE app_requests_created gauge
app_requests_created{path="/",method="GET"} 1.7e+09
# HELP app_latency_seconds Time to answer.
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.005"} 2.0
app_latency_seconds_bucket{le="+Inf"} 3.0
app_latency_seconds_count 3.0
app_latency_seconds_sum 0.012
# HELP app_latency_seconds_created Time to answer.
# TYPE app_latency_seconds_created gauge
app_latency_seconds_created 1.7e+09
# HELP app_pid The pid.
# TYPE app_pid gauge
app_pid 4242.0
# HELP app_unused_total Declared, never used.
# TYPE app_unused_total counter
"#;

    #[test]
    fn reads_what_prometheus_client_writes() {
        let f = one(PYTHON);
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["app_requests_total", "app_latency_seconds", "app_pid"]
        );
        assert_eq!(f[0].kind, Kind::Counter);
        assert_eq!(f[0].help.as_deref(), Some("Requests served."));
        assert_eq!(
            samples(&f[0]),
            [
                (
                    "app_requests_total".into(),
                    r#"method="GET",path="/""#.into(),
                    3.0
                ),
                (
                    "app_requests_total".into(),
                    r#"method="POST",path="/a,b=\"c\"\\""#.into(),
                    1.0
                ),
            ]
        );
        assert_eq!(f[1].kind, Kind::Histogram);
        assert_eq!(f[1].samples.len(), 4);
        assert_eq!(f[1].samples[1].labels, r#"le="+Inf""#);
        assert_eq!(f[2].samples[0].value, 4242.0);
    }

    #[test]
    fn reads_openmetrics_too() {
        let text = "# TYPE jobs counter\n# HELP jobs Jobs.\njobs_total{a=\"1\"} 2 # {trace=\"x\"} 1 1.5\njobs_created{a=\"1\"} 1.7e9\n# TYPE build info\nbuild_info{v=\"1\"} 1\n# TYPE temp gaugehistogram\ntemp_bucket{le=\"+Inf\"} 3\ntemp_gcount 3\ntemp_gsum 6\n# TYPE q summary\nq{quantile=\"0.5\"} 1\nq_count 4\nq_sum 2\n# EOF\ngarbage after EOF\n";
        let f = one(text);
        let names: Vec<(&str, Kind)> = f.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            [
                ("jobs_total", Kind::Counter),
                ("build_info", Kind::Gauge),
                ("temp", Kind::GaugeHistogram),
                ("q", Kind::Summary)
            ]
        );
        assert_eq!(f[0].samples.len(), 1, "_created dropped");
        assert_eq!(f[0].samples[0].value, 2.0);
    }

    #[test]
    fn samples_without_type_are_untyped_families_and_reserved_labels_are_renamed() {
        let f = one("up 1 1700000000000\nx{worker=\"3\",pool=\"a\",z=\"\"} -Inf\n");
        assert_eq!((f[0].name.as_str(), f[0].kind), ("up", Kind::Untyped));
        assert_eq!(
            f[1].samples[0].labels,
            r#"exported_pool="a",exported_worker="3",z="""#
        );
        assert_eq!(f[1].samples[0].value, f64::NEG_INFINITY);
        let f = one("a{b=\"1\",} NaN\n\n# a comment\n");
        assert!(f[0].samples[0].value.is_nan());
    }

    #[test]
    fn malformed_text_is_refused_with_its_line() {
        for (text, line, what) in [
            ("{\"json\": true}", 1, "expected a metric name"),
            ("ok 1\nbad{a=1} 2\n", 2, "expected a quoted value"),
            ("a{b=\"1\" 2\n", 1, "expected , or }"),
            ("a{b=\"x\\q\"} 2\n", 1, "invalid escape"),
            ("a{b=\"x} 2\n", 1, "unterminated"),
            ("a 1 2 3\n", 1, "unexpected"),
            ("a one\n", 1, "invalid value"),
            ("a\n", 1, "expected a space"),
            ("a{b=\"1\",b=\"2\"} 1\n", 1, "twice"),
            ("# TYPE a counter\n# TYPE a gauge\n", 2, "second # TYPE"),
            ("# TYPE a widget\n", 1, "unknown metric type"),
            ("# TYPE h histogram\nh_bucket 1\n", 2, "no \"le\" label"),
            ("<html>\n", 1, "expected a metric name"),
        ] {
            let e = parse(text, &[]).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.what.contains(what), "{text}: {e}");
        }
    }
}
