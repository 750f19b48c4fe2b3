//! Streaming files to and from disk: sequential writes that start the disk
//! write-back as they go, and reads that hand out each chunk as read.
//!
//! An upload is fsynced before it is acknowledged. Left to the kernel, the
//! whole file sits dirty in the page cache until that fsync, which then
//! waits for all of it at once, after the last byte arrived. Asking the
//! kernel to start writing each window as soon as it is complete overlaps
//! the disk with the network, so the final fsync finds little left to do.
//! A new file (a blob spooled whole) goes further and bypasses the page
//! cache where the filesystem allows it.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use bytes::Bytes;
use futures_util::stream;

use crate::storage::ByteStream;

/// Bytes written between two write-back requests.
const WINDOW: u64 = 8 * 1024 * 1024;

/// A direct write: one block of this many bytes, from a buffer aligned to
/// `ALIGN` (what `O_DIRECT` asks of address, length and file offset).
/// Large enough that the disk gets more than one request at once (a block
/// device splits a write into requests of at most `max_sectors_kb`,
/// commonly 4 MiB or less): here, 8 MiB per write went faster than 4.
pub(super) const DIRECT_BLOCK: usize = 8 * 1024 * 1024;
const ALIGN: usize = 4096;

pub struct Writer {
    file: File,
    /// File offset where this writer started (the file's position then).
    written: u64,
    /// Up to where write-back was requested.
    flushed: u64,
    /// Whether the file is open with `O_DIRECT`.
    direct: bool,
}

/// Up to [`DIRECT_BLOCK`] bytes at an address aligned to `ALIGN`, filled
/// in order: what [`Writer::write_block`] writes.
pub struct Block {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    /// An empty block. Safe code cannot ask the allocator for 4 KiB
    /// alignment, so it over-allocates and starts inside.
    pub fn new() -> Block {
        let mem = vec![0u8; DIRECT_BLOCK + ALIGN];
        let start = (ALIGN - (mem.as_ptr() as usize) % ALIGN) % ALIGN;
        Block { mem, start, len: 0 }
    }

    /// Copies as much of `bytes` as fits and returns the rest.
    pub fn fill<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let n = (DIRECT_BLOCK - self.len).min(bytes.len());
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        &bytes[n..]
    }

    pub fn is_full(&self) -> bool {
        self.len == DIRECT_BLOCK
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    fn data(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl Writer {
    /// A buffered writer that continues at the file's position.
    pub fn new(mut file: File) -> Self {
        let start = file.stream_position().unwrap_or(0);
        Writer {
            file,
            written: start,
            flushed: start,
            direct: false,
        }
    }

    /// A writer for a new, empty file, fed whole [`Block`]s, that bypasses
    /// the page cache where the filesystem allows it (`O_DIRECT`): whole
    /// aligned blocks go to the disk with one copy fewer than a buffered
    /// write, and nothing is left dirty for the fsync. Where `O_DIRECT` is
    /// refused (tmpfs, some network filesystems) it writes buffered, like
    /// [`Writer::new`]. The caller fills the blocks, so the copy into them
    /// happens on its thread while this one keeps the disk busy.
    pub fn direct(file: File) -> Self {
        let mut w = Writer::new(file);
        w.direct = w.written == 0 && set_direct(&w.file, true).is_ok();
        w
    }

    /// Writes `bytes` buffered at the end of what was written.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        if self.written - self.flushed >= WINDOW {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }

    /// Writes `block` at the end of what was written: directly when the
    /// file is direct and the block whole, else buffered. A partial block
    /// (the tail) or a short or refused direct write turns the file
    /// buffered for good: direct writes need every offset aligned.
    pub fn write_block(&mut self, block: &Block) -> io::Result<()> {
        let data = block.data();
        if !self.direct {
            return self.write(data);
        }
        if block.is_full() && matches!(self.file.write(data), Ok(n) if n == data.len()) {
            self.written += data.len() as u64;
            self.flushed = self.written;
            return Ok(());
        }
        // Rewrite the block buffered, at its place (a short write moved the
        // position), and stay buffered.
        set_direct(&self.file, false)?;
        self.direct = false;
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, self.written)?;
        self.written += data.len() as u64;
        self.file.seek(io::SeekFrom::Start(self.written))?;
        Ok(())
    }

    /// Hands the file back, buffered (not synced).
    pub fn finish(mut self) -> io::Result<File> {
        if self.direct {
            set_direct(&self.file, false)?;
            self.direct = false;
        }
        Ok(self.file)
    }
}

/// Turns `O_DIRECT` on or off for `file`.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    fcntl_setfl(file, flags).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::Error::new(io::ErrorKind::Unsupported, "O_DIRECT"))
    } else {
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Whatever the chunk sizes, blocks filled from them and written by a
    /// direct writer write every byte once, in order: whole blocks, then
    /// the tail.
    #[test]
    fn a_direct_writer_writes_the_bytes_it_was_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..2 * DIRECT_BLOCK + 12_345)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut w = Writer::direct(File::create(&path).expect("create"));
        let mut block = Block::new();
        for chunk in data.chunks(100_003) {
            let mut rest = chunk;
            while !rest.is_empty() {
                rest = block.fill(rest);
                if block.is_full() {
                    w.write_block(&block).expect("write");
                    block.clear();
                }
            }
        }
        w.write_block(&block).expect("write the tail");
        let mut file = w.finish().expect("finish");
        file.sync_all().expect("sync");
        let mut got = Vec::new();
        File::open(&path)
            .expect("open")
            .read_to_end(&mut got)
            .expect("read");
        assert!(
            got == data,
            "{} bytes read back, {} written",
            got.len(),
            data.len()
        );
        // The file is left buffered: an unaligned write works.
        file.write_all(b"x").expect("unaligned write after finish");
    }

    /// A writer for an existing file appends at its position.
    #[test]
    fn a_buffered_writer_continues_at_the_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data");
        std::fs::write(&path, b"abc").expect("write");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.seek(io::SeekFrom::Start(3)).expect("seek");
        let mut w = Writer::new(file);
        w.write(b"def").expect("write");
        drop(w.finish().expect("finish"));
        assert_eq!(std::fs::read(&path).expect("read"), b"abcdef");
    }
}
