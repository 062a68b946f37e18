//! The operator log's writer: lines are gathered in memory by the threads
//! that log them and written to stderr by a thread of its own, in batches.
//!
//! A request's log line costs a copy into a buffer, not a `write(2)` on the
//! request's worker nor a wake-up of another thread per line: the writer
//! thread wakes every [`FLUSH_EVERY`] (or when [`FLUSH_AT`] bytes are
//! waiting) and writes everything gathered at once. Nothing is dropped: when
//! [`BLOCK_AT`] bytes are waiting (stderr slower than the log), the logging
//! thread writes them out itself. At exit [`LogGuard`] writes what is left.
//! A process killed with SIGKILL loses at most the last [`FLUSH_EVERY`] of
//! lines; the audit log, not this log, is the record of accesses.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Waiting bytes that wake the writer early.
pub const FLUSH_AT: usize = 64 * 1024;
/// Waiting bytes at which the logging thread writes them itself.
pub const BLOCK_AT: usize = 4 * 1024 * 1024;

struct Shared {
    buf: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `MakeWriter` for `tracing_subscriber::fmt` that batches lines (see the
/// module documentation). Cheap to clone.
#[derive(Clone)]
pub struct BatchedWriter<W: Write + Send + 'static> {
    shared: Arc<Shared>,
    out: Arc<Mutex<W>>,
}

/// Writes what is left and stops the writer thread when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl<W: Write + Send + 'static> BatchedWriter<W> {
    /// Starts the writer thread for `out`.
    pub fn start(out: W) -> std::io::Result<(Self, LogGuard)> {
        let shared = Arc::new(Shared {
            buf: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let out = Arc::new(Mutex::new(out));
        let (s, o) = (shared.clone(), out.clone());
        let thread = std::thread::Builder::new()
            .name("onewindow-log".into())
            .spawn(move || flush_loop(&s, &o))?;
        Ok((
            Self {
                shared: shared.clone(),
                out,
            },
            LogGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

fn write_out<W: Write>(out: &Mutex<W>, bytes: &[u8]) {
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    // Nowhere to report a failing stderr; the line is lost, as with eprintln.
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

fn flush_loop<W: Write>(shared: &Shared, out: &Mutex<W>) {
    let mut spare = Vec::new();
    loop {
        let mut pending = shared.lock();
        if pending.bytes.len() < FLUSH_AT && !pending.closed {
            pending = shared
                .wake
                .wait_timeout(pending, FLUSH_EVERY)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        let closed = pending.closed;
        std::mem::swap(&mut pending.bytes, &mut spare);
        drop(pending);
        if !spare.is_empty() {
            write_out(out, &spare);
            spare.clear();
        }
        if closed {
            return;
        }
    }
}

/// One log line's writer: appends to the shared buffer.
pub struct LineWriter<'a, W: Write + Send + 'static> {
    owner: &'a BatchedWriter<W>,
}

impl<W: Write + Send + 'static> Write for LineWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.owner.shared.lock();
        pending.bytes.extend_from_slice(buf);
        let len = pending.bytes.len();
        if pending.closed || len >= BLOCK_AT {
            // Back-pressure instead of loss: write it out here.
            let bytes = std::mem::take(&mut pending.bytes);
            drop(pending);
            write_out(&self.owner.out, &bytes);
        } else if len >= FLUSH_AT {
            drop(pending);
            self.owner.shared.wake.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { owner: self }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(w: &BatchedWriter<Sink>, s: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        w.make_writer().write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_arrives_in_order_by_exit() {
        let sink = Sink::default();
        let (w, guard) = BatchedWriter::start(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        line(&w, &format!("t{t} line {i}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), 5000);
            assert!(
                mine.iter()
                    .enumerate()
                    .all(|(i, l)| l.ends_with(&format!(" {i}")))
            );
        }
    }

    #[test]
    fn a_line_is_written_without_exit_and_without_a_full_buffer() {
        let sink = Sink::default();
        let (w, _guard) = BatchedWriter::start(sink.clone()).unwrap();
        line(&w, "one\n");
        // The writer's own timer, not this test's, writes it out.
        for _ in 0..200 {
            if !sink.0.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(FLUSH_EVERY / 5);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"one\n");
    }

    #[test]
    fn lines_written_after_exit_are_written_directly() {
        let sink = Sink::default();
        let (w, guard) = BatchedWriter::start(sink.clone()).unwrap();
        drop(guard);
        line(&w, "late\n");
        assert_eq!(&*sink.0.lock().unwrap(), b"late\n");
    }
}
