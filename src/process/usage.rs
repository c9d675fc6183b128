//! Resource usage of a live process, read from `/proc/<pid>/stat`: what the
//! per-worker metrics and `/status` report.

/// Memory and CPU of one process (not of its children or process group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    /// Resident set size.
    pub rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
}

/// The usage of `pid`, or `None` when it is gone or `/proc` is unreadable.
pub(crate) fn read(pid: i32) -> Option<Usage> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    let ticks = procfs::ticks_per_second().max(1) as f64;
    Some(Usage {
        rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let u = read(std::process::id() as i32).expect("our own /proc entry");
        assert!(u.rss_bytes > 1024 * 1024, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
        assert_eq!(read(i32::MAX), None);
    }
}
