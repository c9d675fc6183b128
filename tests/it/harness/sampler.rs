//! Watching a value on a thread while a test does something else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Polls a probe back to back (10 ms apart) until finished, keeping every value it
/// returned with the time it was read. A probe that returns `None` (nothing to read
/// right now) is just asked again.
pub struct Sampler<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(Instant, T)>>>,
}

impl<T: Send + 'static> Sampler<T> {
    pub fn start(mut probe: impl FnMut() -> Option<T> + Send + 'static) -> Sampler<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Some(v) = probe() {
                    samples.push((Instant::now(), v));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop and return every sample, oldest first.
    pub fn finish(mut self) -> Vec<(Instant, T)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("the sampler thread")
    }
}

impl<T> Drop for Sampler<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
