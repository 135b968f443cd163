//! A reader that bounds the tar metadata read between two entries. The `tar` crate reads GNU
//! long names and PAX headers wholly into memory before handing out an entry, so a hostile
//! layer could otherwise exhaust memory with one giant header; this reader fails the stream
//! once more than [`MAX_ENTRY_METADATA_BYTES`] are read outside entry contents.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Most bytes of headers, long names, PAX records and skipped padding allowed before one
/// entry. Generous for real archives (a path is at most 4 KiB, PAX records a few hundred).
pub const MAX_ENTRY_METADATA_BYTES: u64 = 1 << 20;

/// Shared between the reader inside the tar archive and the unpacker driving it.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    metadata_bytes: Cell<u64>,
    reading_contents: Cell<bool>,
}

impl Meter {
    /// Called when an entry was handed out: the next entry starts a fresh count.
    pub(crate) fn entry_started(&self) {
        self.metadata_bytes.set(0);
    }

    /// Runs `read_contents` with the reads counted as entry contents (bounded elsewhere).
    pub(crate) fn contents<T>(&self, read_contents: impl FnOnce() -> T) -> T {
        self.reading_contents.set(true);
        let result = read_contents();
        self.reading_contents.set(false);
        result
    }
}

pub(crate) struct MeteredReader<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> MeteredReader<R> {
    pub(crate) fn new(inner: R, meter: Rc<Meter>) -> Self {
        MeteredReader { inner, meter }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.meter.reading_contents.get() {
            let total = self.meter.metadata_bytes.get() + n as u64;
            self.meter.metadata_bytes.set(total);
            if total > MAX_ENTRY_METADATA_BYTES {
                return Err(io::Error::other(format!(
                    "more than {MAX_ENTRY_METADATA_BYTES} bytes of headers before one entry (MAX_ENTRY_METADATA_BYTES)"
                )));
            }
        }
        Ok(n)
    }
}
