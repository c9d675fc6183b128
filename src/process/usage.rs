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

/// Memory of one process as its pages are shared: from `/proc/<pid>/smaps_rollup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    /// Proportional set size: each page divided by the number of processes mapping it.
    pub pss_bytes: u64,
    /// Unique set size: pages no other process maps (private clean + private dirty).
    pub uss_bytes: u64,
}

/// The PSS and USS of `pid`, or `None` when it is gone or the file is unreadable
/// (kernels before 4.14 have no `smaps_rollup`). Reading it walks the process's
/// page tables, so it is done at scrape or check time only.
pub(crate) fn memory(pid: i32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_smaps_rollup(&text)
}

fn parse_smaps_rollup(text: &str) -> Option<Memory> {
    let kib = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some(Memory {
        pss_bytes: kib("Pss")?,
        uss_bytes: kib("Private_Clean")? + kib("Private_Dirty")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pss_and_uss() {
        let text = "00400000-7ffd rw-p 00000000 00:00 0  [rollup]\nRss:              5000 kB\nPss:              3000 kB\nPss_Anon:         1000 kB\nShared_Clean:     1500 kB\nPrivate_Clean:     500 kB\nPrivate_Dirty:    1200 kB\n";
        assert_eq!(
            parse_smaps_rollup(text),
            Some(Memory {
                pss_bytes: 3000 * 1024,
                uss_bytes: 1700 * 1024
            })
        );
        let me = memory(std::process::id() as i32).expect("our own smaps_rollup");
        assert!(
            me.pss_bytes > 0 && me.uss_bytes > 0 && me.uss_bytes <= me.pss_bytes,
            "{me:?}"
        );
    }

    #[test]
    fn reads_this_process() {
        let u = read(std::process::id() as i32).expect("our own /proc entry");
        assert!(u.rss_bytes > 1024 * 1024, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
        assert_eq!(read(i32::MAX), None);
    }
}
