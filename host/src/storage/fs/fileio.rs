//! Streaming files to and from disk: sequential writes that start the disk
//! write-back as they go, and reads that hand out each chunk as read.
//!
//! An upload is fsynced before it is acknowledged. Left to the kernel, the
//! whole file sits dirty in the page cache until that fsync, which then
//! waits for all of it at once, after the last byte arrived. Asking the
//! kernel to start writing each window as soon as it is complete overlaps
//! the disk with the network, so the final fsync finds little left to do.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use bytes::Bytes;
use futures_util::stream;

use crate::storage::ByteStream;

/// Bytes written between two write-back requests.
const WINDOW: u64 = 8 * 1024 * 1024;

pub struct Writer {
    file: File,
    /// File offset where this writer started (the file's position then).
    written: u64,
    /// Up to where write-back was requested.
    flushed: u64,
}

impl Writer {
    pub fn new(mut file: File) -> Self {
        let start = file.stream_position().unwrap_or(0);
        Writer {
            file,
            written: start,
            flushed: start,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        if self.written - self.flushed >= WINDOW {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }

    pub fn into_inner(self) -> File {
        self.file
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk, without
/// waiting. Only a hint: durability still comes from the fsync. On Linux,
/// `POSIX_FADV_DONTNEED` starts write-back of the dirty pages in the range
/// (and drops only pages that are already clean, none of these yet).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::num::NonZeroU64;
    let _ = rustix::fs::fadvise(
        file,
        offset,
        NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Bytes read per chunk when streaming a blob out: large enough for
/// loopback speed, small enough that many concurrent pulls stay cheap (a
/// pull holds at most two chunks: one being sent, the next being read).
const READ_CHUNK: u64 = 1024 * 1024;

/// `len` bytes of `file` from `start`, as a stream of chunks. Each chunk is
/// read straight into the buffer that is sent (no copy through an
/// intermediate buffer), on the blocking pool, and the next read starts
/// while the previous chunk is being sent.
pub fn read_stream(file: File, start: u64, len: u64) -> ByteStream {
    struct State {
        pending: Option<tokio::task::JoinHandle<io::Result<(File, Bytes)>>>,
        remaining: u64,
    }
    fn read_next(
        mut file: File,
        seek_to: Option<u64>,
        want: u64,
    ) -> tokio::task::JoinHandle<io::Result<(File, Bytes)>> {
        tokio::task::spawn_blocking(move || {
            if let Some(at) = seek_to {
                file.seek(io::SeekFrom::Start(at))?;
            }
            let mut buf = Vec::with_capacity(want as usize);
            (&mut file).take(want).read_to_end(&mut buf)?;
            Ok((file, Bytes::from(buf)))
        })
    }
    let first =
        (len > 0).then(|| read_next(file, (start > 0).then_some(start), len.min(READ_CHUNK)));
    let state = State {
        pending: first,
        remaining: len,
    };
    Box::pin(stream::unfold(state, |mut state| async move {
        let pending = state.pending.take()?;
        let result = match pending.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        };
        match result {
            Ok((file, chunk)) => {
                if chunk.is_empty() {
                    // The file is shorter than its recorded size.
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "blob file ended early");
                    return Some((Err(e), state));
                }
                state.remaining -= chunk.len() as u64;
                if state.remaining > 0 {
                    state.pending = Some(read_next(file, None, state.remaining.min(READ_CHUNK)));
                }
                Some((Ok(chunk), state))
            }
            Err(e) => Some((Err(e), state)),
        }
    }))
}
