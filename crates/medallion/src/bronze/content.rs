//! An input's content, read once: decompressed when it starts like gzip, hashed as it passes (its
//! SHA-256 is the identity bronze lands it under, exactly once), bounded against gzip bombs, and a
//! gzip stream cut off part-way kept up to where it breaks.
//!
//! ```text
//! raw bytes ─▶ [sha256 of the raw bytes: gzip only] ─▶ inflate ─▶ sha256 of the content ─▶ reader
//! ```
//!
//! Landing reads an input through [`Content`] while it converts it, so the hash costs no read of
//! its own; the raw bytes' hash (the same as the content's for text that is not gzip) is what a
//! landing file is remembered by.

use std::io::{BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use super::ingest::{Input, MAX_INFLATE_RATIO, MAX_INFLATED_BYTES, hex};

/// Bytes read from the raw input at a time.
const READ_BUFFER: usize = 1 << 16;

/// The length and SHA-256 of some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Print {
    /// How many.
    pub bytes: u64,
    /// Their SHA-256, hex.
    pub sha256: String,
}

/// An input's content as landing knows it.
#[derive(Debug, Clone)]
pub(crate) struct Fingerprint {
    /// The decompressed content (what lands).
    pub content: Print,
    /// The raw bytes read (compressed for gzip), when all of them were read: a gzip stream
    /// unreadable part-way leaves the rest unread.
    pub raw: Option<Print>,
    /// A gzip stream unreadable past `content.bytes`.
    pub damage: Option<String>,
}

/// An input's raw bytes.
type Raw = Box<dyn Read + Send>;

/// The raw bytes: as they are, or inflated (their own hash taken below the decoder).
enum Text {
    Plain(BufReader<Raw>),
    Gzip(Box<MultiGzDecoder<BufReader<Hashing<Raw>>>>),
}

/// An input's content as a reader (see the module's docs). Reading past the gzip-bomb bound is an
/// error; so is a gzip stream unreadable from its start. A stream unreadable part-way ends the
/// content there (the damage kept for [`Content::finish`]).
pub(crate) struct Content {
    text: Text,
    /// Decompressed bytes allowed (gzip; else unbounded) and the compressed size they derive from.
    cap: u64,
    compressed: u64,
    hashed: Hashing<()>,
    damage: Option<String>,
    /// Why the input cannot land at all: the reader's last error, said as it should be to a user.
    fatal: Option<String>,
}

impl Content {
    /// Opens `from` (blocking). An input that cannot be opened is an error for the user.
    pub fn open(from: &dyn Input) -> Result<Content, String> {
        let unreadable = |e: std::io::Error| format!("cannot be read: {e}");
        let compressed = from.size().map_err(unreadable)?;
        let mut raw = BufReader::with_capacity(READ_BUFFER, from.open().map_err(unreadable)?);
        let gzip = raw.fill_buf().map_err(unreadable)?.starts_with(&[0x1f, 0x8b]);
        let (text, cap) = if gzip {
            let cap = MAX_INFLATED_BYTES.min(compressed.saturating_mul(MAX_INFLATE_RATIO).max(1 << 20));
            // The buffer already holds the first bytes: re-wrap below the hash so they are hashed.
            let first = raw.buffer().to_vec();
            let rest = raw.into_inner();
            let raw: Raw = Box::new(std::io::Cursor::new(first).chain(rest));
            let hashed = BufReader::with_capacity(READ_BUFFER, Hashing::new(raw));
            (Text::Gzip(Box::new(MultiGzDecoder::new(hashed))), cap)
        } else {
            (Text::Plain(raw), u64::MAX)
        };
        Ok(Content { text, cap, compressed, hashed: Hashing::new(()), damage: None, fatal: None })
    }

    /// Whether the input is gzip.
    pub fn gzip(&self) -> bool {
        matches!(self.text, Text::Gzip(_))
    }

    /// Why the input cannot land, when a read failed for a reason the user must see as it is (a
    /// gzip bomb, a stream that is not gzip after all): the caller reports this rather than its
    /// own wrapping of the read error.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Reads what is left (hashing it) and says what was read.
    pub fn finish(mut self) -> Result<Fingerprint, String> {
        if let Err(e) = std::io::copy(&mut self, &mut std::io::sink()) {
            return Err(self.fatal.take().unwrap_or_else(|| format!("cannot be read: {e}")));
        }
        let content = self.hashed.digest();
        let raw = match self.text {
            Text::Plain(_) => Some(content.clone()),
            Text::Gzip(_) if self.damage.is_some() => None,
            Text::Gzip(decoder) => Some(decoder.into_inner().into_inner().digest()),
        };
        Ok(Fingerprint { content, raw, damage: self.damage })
    }

    fn fail(&mut self, why: String) -> std::io::Error {
        let e = std::io::Error::other(why.clone());
        self.fatal = Some(why);
        e
    }
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.damage.is_some() {
            return Ok(0);
        }
        loop {
            let read = match &mut self.text {
                Text::Plain(r) => r.read(buf),
                Text::Gzip(r) => r.read(buf),
            };
            let total = self.hashed.bytes;
            match read {
                Ok(n) => {
                    if total + n as u64 > self.cap {
                        let why = format!(
                            "decompresses to more than {} bytes ({MAX_INFLATE_RATIO}x its {} compressed bytes, or {} GiB, \
                             at most): refused whole; land it in smaller files",
                            self.cap,
                            self.compressed,
                            MAX_INFLATED_BYTES >> 30
                        );
                        return Err(self.fail(why));
                    }
                    self.hashed.update(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.gzip() && total == 0 => {
                    return Err(self.fail(format!("looks like gzip but cannot be decompressed: {e}")));
                }
                Err(e) if self.gzip() => {
                    self.damage = Some(format!(
                        "the gzip stream is unreadable after {total} decompressed bytes ({e}): what was read landed, a \
                         cut-off last line as a corrupt record; the rest of the input is not in bronze"
                    ));
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A hash of the bytes passing through `inner` (or given to [`Hashing::update`]).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }

    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    fn digest(self) -> Print {
        Print { bytes: self.bytes, sha256: hex(&self.hasher.finalize()) }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(text: &[u8]) -> Vec<u8> {
        gz_at(text, flate2::Compression::fast())
    }

    fn gz_at(text: &[u8], level: flate2::Compression) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
        e.write_all(text).expect("gzip");
        e.finish().expect("gzip")
    }

    fn sha(bytes: &[u8]) -> Print {
        Print { bytes: bytes.len() as u64, sha256: hex(&Sha256::digest(bytes)) }
    }

    fn read(input: Vec<u8>) -> (Vec<u8>, Result<Fingerprint, String>) {
        let input = bytes::Bytes::from(input);
        let mut content = Content::open(&input).expect("open");
        let mut text = Vec::new();
        // One byte at a time as well as in bulk: the hash must not depend on the reads.
        let mut one = [0u8; 1];
        loop {
            match content.read(&mut one) {
                Ok(0) => break,
                Ok(_) => text.push(one[0]),
                Err(_) => return (text, Err(content.fatal().unwrap_or("no reason").to_string())),
            }
        }
        (text, content.finish())
    }

    #[test]
    fn plain_text_is_its_own_raw_bytes() {
        let (text, print) = read(b"{\"a\": 1}\n".to_vec());
        let print = print.expect("print");
        assert_eq!(text, b"{\"a\": 1}\n");
        assert_eq!(print.content, sha(b"{\"a\": 1}\n"));
        assert_eq!(print.raw, Some(print.content.clone()));
        assert!(print.damage.is_none());
    }

    #[test]
    fn gzip_is_hashed_inflated_and_raw() {
        let body: Vec<u8> = (0..50_000).flat_map(|i| format!("{{\"id\": {i}}}\n").into_bytes()).collect();
        let mut two = gz(&body[..1000]);
        two.extend(gz(&body[1000..]));
        let (text, print) = read(two.clone());
        let print = print.expect("print");
        assert_eq!(text, body, "both members");
        assert_eq!(print.content, sha(&body));
        assert_eq!(print.raw, Some(sha(&two)));
    }

    #[test]
    fn a_cut_off_gzip_stream_keeps_what_was_read() {
        let body: Vec<u8> = (0..200_000).flat_map(|i| format!("{{\"id\": {i}}}\n").into_bytes()).collect();
        let mut cut = gz(&body);
        cut.truncate(cut.len() / 2);
        let (text, print) = read(cut);
        let print = print.expect("print");
        assert!(!text.is_empty() && body.starts_with(&text), "a prefix: {} bytes", text.len());
        assert_eq!(print.content, sha(&text));
        assert_eq!(print.raw, None, "the raw bytes were not all read");
        assert!(print.damage.as_deref().is_some_and(|d| d.contains("unreadable after")), "{:?}", print.damage);
    }

    #[test]
    fn a_gzip_bomb_and_a_false_gzip_header_are_refused() {
        let bomb = gz_at(&vec![b'a'; 8 << 20], flate2::Compression::best());
        assert!(bomb.len() * 200 < 8 << 20, "{} bytes", bomb.len());
        let (text, print) = read(bomb);
        assert!(print.expect_err("bomb").contains("decompresses to more than"));
        assert!(text.len() < 2 << 20, "stopped at the bound, not at the end: {}", text.len());
        let (_, print) = read(vec![0x1f, 0x8b, 0, 0, 0]);
        assert!(print.expect_err("not gzip").contains("looks like gzip but cannot be decompressed"));
    }
}
