//! The gzip writer of bronze batches: the text in chunks of [`CHUNK_BYTES`], each compressed by
//! libdeflate as one gzip member, the members written one after another (RFC 1952 allows any
//! number; `zcat`, Python's `gzip`, flate2's `MultiGzDecoder` and DuckDB read them as one
//! stream). The first member's header carries the batch's extra field, if any ([`Gzip::new`]).
//!
//! Why not flate2's streaming encoder: on the bench's batches, libdeflate at level 1 compressed
//! in 59% of zlib-rs's level-3 time, to the same bytes on NDJSON and 6% more on CSV (README,
//! "Semantics"). It compresses whole buffers only, hence the chunks; a chunk restarts the 32 KiB
//! window, which costs nothing measurable at 4 MiB. Memory: one chunk of text and its output.

use std::io::{self, Write};

use libdeflater::{CompressionLvl, Compressor, crc32};

/// Text compressed as one gzip member.
pub const CHUNK_BYTES: usize = 4 << 20;

/// libdeflate's level for bronze batches (README, "Semantics": levels and libraries measured).
pub const LEVEL: i32 = 1;

/// Gzip header flag: an extra field follows the fixed header.
const FEXTRA: u8 = 4;

/// A [`Write`] compressing what it is given into gzip members written to `out`.
pub struct Gzip<W: Write> {
    out: W,
    compressor: Compressor,
    /// Text not compressed yet (less than a chunk).
    text: Vec<u8>,
    /// The first member's extra field, until it is written.
    extra: Option<Vec<u8>>,
    /// Members written.
    members: u64,
    /// Compressed bytes of the member being written (reused).
    buf: Vec<u8>,
}

impl<W: Write> Gzip<W> {
    /// A writer to `out`; `extra`, the whole extra field (subfields with their ids and lengths),
    /// goes in the first member's header. It must fit a gzip header (at most 65,535 bytes).
    pub fn new(out: W, extra: Option<Vec<u8>>) -> io::Result<Gzip<W>> {
        if extra.as_ref().is_some_and(|e| e.len() > usize::from(u16::MAX)) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a gzip extra field holds at most 65,535 bytes"));
        }
        let level = CompressionLvl::new(LEVEL).map_err(|e| io::Error::other(format!("libdeflate level: {e:?}")))?;
        Ok(Gzip { out, compressor: Compressor::new(level), text: Vec::new(), extra, members: 0, buf: Vec::new() })
    }

    /// Compresses the text held (possibly none) as the next member.
    fn member(&mut self) -> io::Result<()> {
        let extra = self.extra.take();
        let mut header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        if extra.is_some() {
            header[3] = FEXTRA;
        }
        self.out.write_all(&header)?;
        if let Some(extra) = extra {
            let len = u16::try_from(extra.len()).map_err(|_| io::Error::other("gzip extra field too long"))?;
            self.out.write_all(&len.to_le_bytes())?;
            self.out.write_all(&extra)?;
        }
        let bound = self.compressor.deflate_compress_bound(self.text.len());
        self.buf.resize(bound, 0);
        let n = self
            .compressor
            .deflate_compress(&self.text, &mut self.buf)
            .map_err(|e| io::Error::other(format!("libdeflate: {e}")))?;
        self.out.write_all(&self.buf[..n])?;
        self.out.write_all(&crc32(&self.text).to_le_bytes())?;
        // ISIZE: the text's length modulo 2^32 (a chunk is far smaller).
        self.out.write_all(&(self.text.len() as u32).to_le_bytes())?;
        self.text.clear();
        self.members += 1;
        Ok(())
    }

    /// Compresses what is left (an empty text still gets its member: the result is always a gzip
    /// stream) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.text.is_empty() || self.members == 0 {
            self.member()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Gzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.text.capacity() == 0 {
            self.text.reserve_exact(CHUNK_BYTES);
        }
        let n = data.len().min(CHUNK_BYTES - self.text.len());
        self.text.extend_from_slice(&data[..n]);
        if self.text.len() == CHUNK_BYTES {
            self.member()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn inflate(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz).read_to_end(&mut out).expect("a gzip stream");
        out
    }

    /// Text that compresses like a batch (repeats) but differs everywhere (a counter).
    fn text(len: usize) -> Vec<u8> {
        let mut t = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while t.len() < len {
            t.extend_from_slice(
                format!("{{\"order_id\": {i}, \"amount\": \"{}.{:02}\"}}\n", i * 7 % 1000, i % 100).as_bytes(),
            );
            i += 1;
        }
        t.truncate(len);
        t
    }

    #[test]
    fn any_length_written_in_any_pieces_inflates_to_the_same_text_in_members_of_a_chunk() {
        for len in [0, 1, 1000, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 2 * CHUNK_BYTES + 12_345] {
            let t = text(len);
            for piece in [7, 65_536, CHUNK_BYTES + 3] {
                let mut gz = Gzip::new(Vec::new(), None).expect("in memory");
                for p in t.chunks(piece) {
                    gz.write_all(p).expect("in memory");
                }
                let members = len.div_ceil(CHUNK_BYTES).max(1);
                let out = gz.finish().expect("in memory");
                assert_eq!(inflate(&out), t, "{len} bytes written {piece} at a time");
                // Each member is a whole gzip stream: a single-member reader stops after the first.
                let mut first = Vec::new();
                flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut first).expect("in memory");
                assert_eq!(first.len(), len.min(CHUNK_BYTES), "{len} bytes: the first member");
                let starts = out.windows(4).filter(|w| *w == [0x1f, 0x8b, 8, 0]).count();
                assert!(starts >= members, "{len} bytes: {starts} member headers, {members} expected at least");
            }
        }
    }

    #[test]
    fn the_first_member_alone_carries_the_extra_field_and_readers_skip_it() {
        let extra = b"MD\x05\x00hello".to_vec();
        let t = text(CHUNK_BYTES + 10);
        let mut gz = Gzip::new(Vec::new(), Some(extra.clone())).expect("in memory");
        gz.write_all(&t).expect("in memory");
        let out = gz.finish().expect("in memory");
        let header = flate2::read::GzDecoder::new(&out[..]);
        assert_eq!(header.header().and_then(|h| h.extra()), Some(&extra[..]));
        assert_eq!(inflate(&out), t);
        assert_eq!(out.windows(4).filter(|w| w[..3] == [0x1f, 0x8b, 8] && w[3] == FEXTRA).count(), 1);
        let too_long = vec![0u8; usize::from(u16::MAX) + 1];
        assert!(Gzip::new(Vec::new(), Some(too_long)).is_err());
        let empty = Gzip::new(Vec::new(), None).expect("in memory").finish().expect("in memory");
        assert!(inflate(&empty).is_empty() && empty.len() > 18, "an empty text is still a gzip stream");
    }
}
