//! A task's output, read with bounded memory: the line reader and result extraction.
//!
//! Owns [`LineReader`], which splits any [`AsyncRead`] into lines through a
//! fixed 64 KiB buffer and cuts lines longer than a cap (so a task printing
//! 150 MB without a newline costs at most `cap` bytes), and [`ResultScanner`],
//! which is fed every stdout line and remembers just enough to name the result
//! at EOF: the last single-line candidate, else a pretty-printed object that
//! ends stdout. Kept apart from process control so both are unit-testable
//! without spawning anything.

use std::io;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::{self, ResultError, TaskResult};

/// Size of the read buffer of every [`LineReader`].
pub(crate) const READ_BUFFER: usize = 64 * 1024;
/// The read buffer a reader starts with; it grows to [`READ_BUFFER`] once a
/// read fills it. Most tasks print little, and zeroing two full buffers per
/// run is a large share of what a no-op run in a batch costs.
const INITIAL_READ_BUFFER: usize = 4 * 1024;
/// Line length after which a line's buffer grows straight to the cap.
const BIG_LINE: usize = 1024 * 1024;
/// Longest stderr line kept; the rest of a longer line is dropped.
pub(crate) const STDERR_LINE_CAP: usize = 64 * 1024;

/// One line as read: its first `cap` bytes, without the terminator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<'a> {
    /// The line, cut to the cap, without `\n` / `\r\n`.
    pub text: &'a [u8],
    /// Whether the line was longer than the cap and cut.
    pub truncated: bool,
    /// The last non-whitespace byte of the *whole* line, even the dropped
    /// part: tells whether a cut line starting with `{` looked like an object.
    pub last_nonspace: Option<u8>,
}

impl<'a> Line<'a> {
    /// A line that was not cut (for tests and callers that have whole lines).
    #[cfg(test)]
    pub fn whole(text: &'a [u8]) -> Self {
        Self {
            text,
            truncated: false,
            last_nonspace: text
                .iter()
                .rev()
                .copied()
                .find(|b| !b.is_ascii_whitespace()),
        }
    }
}

/// What [`LineReader`] found in what it has read so far.
enum Scan {
    /// A line.
    Found(Found),
    /// Nothing more: EOF and no partial line.
    Eof,
    /// No complete line yet: time to read.
    Empty,
}

/// Where the line [`LineReader::next_line`] found lives.
enum Found {
    /// Entirely inside the read buffer: handed out without copying.
    InBuffer { start: usize, end: usize },
    /// Assembled in `line` across several reads.
    Assembled,
}

/// Splits an [`AsyncRead`] into lines with bounded memory: a 64 KiB read
/// buffer plus at most `cap` bytes of the current line.
pub(crate) struct LineReader<R> {
    reader: R,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[pos..filled]`.
    pos: usize,
    filled: usize,
    eof: bool,
    /// Whether the last read filled the buffer (time to grow it).
    last_read_full: bool,
    cap: usize,
    /// The current line's first `cap` bytes, when it spans several reads.
    line: Vec<u8>,
    /// Bytes of the current line seen so far (kept or not).
    line_len: u64,
    /// The current line's last byte and last non-whitespace byte.
    last_byte: Option<u8>,
    last_nonspace: Option<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// The next line, or `None` at EOF. A final line without a newline is
    /// still a line. Cancel-safe between calls only: dropping the future
    /// mid-line loses that partial line, which is what a bounded drain wants.
    pub async fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        let found = loop {
            match self.scan() {
                Scan::Found(found) => break found,
                Scan::Eof => return Ok(None),
                Scan::Empty => {}
            }
            let n = loop {
                match self.reader.read(&mut self.buf).await {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.filled(n);
        };
        Ok(Some(self.line_at(found)))
    }
}

impl<R> LineReader<R> {
    /// A reader keeping at most `cap` bytes of each line.
    pub fn new(reader: R, cap: usize) -> Self {
        Self {
            reader,
            buf: vec![0; INITIAL_READ_BUFFER].into_boxed_slice(),
            pos: 0,
            filled: 0,
            eof: false,
            last_read_full: false,
            cap,
            line: Vec::new(),
            line_len: 0,
            last_byte: None,
            last_nonspace: None,
        }
    }

    /// Looks for the next line in what was read; [`Scan::Empty`] when
    /// everything buffered is consumed (kept in the current line) and the
    /// next read may go into the whole buffer.
    fn scan(&mut self) -> Scan {
        if self.pos < self.filled {
            let avail = &self.buf[self.pos..self.filled];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                let (start, end) = (self.pos, self.pos + i);
                self.pos = end + 1;
                if self.line_len == 0 {
                    return Scan::Found(Found::InBuffer { start, end });
                }
                self.append(start, end);
                return Scan::Found(Found::Assembled);
            }
            let (start, end) = (self.pos, self.filled);
            self.append(start, end);
            self.pos = 0;
            self.filled = 0;
        }
        if self.eof {
            return if self.line_len == 0 {
                Scan::Eof
            } else {
                Scan::Found(Found::Assembled)
            };
        }
        // Everything buffered was consumed: if the last read filled the
        // buffer, the task is chatty, so read in bigger chunks from now on.
        if self.last_read_full && self.buf.len() < READ_BUFFER {
            self.buf = vec![0; READ_BUFFER].into_boxed_slice();
        }
        Scan::Empty
    }

    /// Records a read of `n` bytes into the whole buffer (0: EOF).
    fn filled(&mut self, n: usize) {
        self.pos = 0;
        self.filled = n;
        self.eof = n == 0;
        self.last_read_full = n == self.buf.len();
    }

    /// The line `found` points at.
    fn line_at(&mut self, found: Found) -> Line<'_> {
        match found {
            Found::InBuffer { start, end } => {
                let raw = &self.buf[start..end];
                let last_nonspace = raw.iter().rev().copied().find(|b| !b.is_ascii_whitespace());
                let text = raw.strip_suffix(b"\r").unwrap_or(raw);
                let truncated = text.len() > self.cap;
                Line {
                    text: &text[..text.len().min(self.cap)],
                    truncated,
                    last_nonspace,
                }
            }
            Found::Assembled => {
                let mut full = self.line_len;
                if self.last_byte == Some(b'\r') {
                    full -= 1;
                }
                let truncated = full > self.cap as u64;
                // Uncut, `line` holds the whole line (and maybe its `\r`).
                let kept = full.min(self.line.len().min(self.cap) as u64) as usize;
                let last_nonspace = self.last_nonspace;
                self.line_len = 0;
                self.last_byte = None;
                self.last_nonspace = None;
                // Lines are handed out from `line`, which is cleared on the next call.
                self.line.truncate(kept);
                Line {
                    text: &self.line,
                    truncated,
                    last_nonspace,
                }
            }
        }
    }

    /// Adds `buf[start..end]` to the current line, keeping at most `cap` bytes.
    fn append(&mut self, start: usize, end: usize) {
        if self.line_len == 0 {
            self.line.clear();
            // A huge line must not keep its allocation for every later line.
            if self.line.capacity() > 4 * READ_BUFFER {
                self.line = Vec::new();
            }
        }
        let piece = &self.buf[start..end];
        if piece.is_empty() {
            return;
        }
        // Keep one byte over the cap so a `\r` right after `cap` bytes is not a cut.
        let room = (self.cap + 1).saturating_sub(self.line.len());
        let take = piece.len().min(room);
        if self.line.len() + take > self.line.capacity() && self.line.capacity() >= BIG_LINE {
            // Past 1 MiB, grow once to the cap instead of doubling: each doubling
            // copies, and the blocks it frees stay in the peak RSS. Untouched
            // capacity costs no memory.
            self.line.reserve_exact(room);
        }
        self.line.extend_from_slice(&piece[..take]);
        self.line_len += piece.len() as u64;
        self.last_byte = piece.last().copied();
        if let Some(b) = piece
            .iter()
            .rev()
            .copied()
            .find(|b| !b.is_ascii_whitespace())
        {
            self.last_nonspace = Some(b);
        }
    }
}

/// The last single-line candidate seen on stdout.
#[derive(Debug)]
enum Candidate {
    /// A JSON object with an integer `status`.
    Object(Value),
    /// A line that looked like an object but was longer than the limit.
    TooLarge,
}

/// What stdout says the result is.
#[derive(Debug, PartialEq)]
pub(crate) enum Extracted {
    /// Nothing that claims to be a result.
    None,
    /// A result, with its raw object for `outputs` validation.
    Found(TaskResult, Value),
    /// Something that claims to be a result but is not a valid one.
    Invalid(String),
    /// The result is larger than the limit.
    TooLarge,
}

impl Extracted {
    fn from_parsed(r: Result<(TaskResult, Value), ResultError>) -> Self {
        match r {
            Ok((result, raw)) => Extracted::Found(result, raw),
            Err(e) => Extracted::Invalid(e.to_string()),
        }
    }
}

/// Finds the result among stdout lines, fed one line at a time, in bounded memory.
///
/// 1. The last line that is a JSON object with an integer `status` wins.
/// 2. Failing that, a (pretty-printed) object that *ends* stdout: the block
///    from the last line starting with `{` at column 0 to EOF, if it is at most
///    `limit` bytes and parses as a result.
#[derive(Debug)]
pub(crate) struct ResultScanner {
    limit: usize,
    last: Option<Candidate>,
    /// The block since the last line starting with `{`, while no line qualified.
    block: Option<Vec<u8>>,
    /// The last block grew past `limit` and was dropped.
    block_oversized: bool,
}

impl ResultScanner {
    /// A scanner accepting results of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            last: None,
            block: None,
            block_oversized: false,
        }
    }

    /// Looks at one stdout line.
    pub fn feed(&mut self, line: Line<'_>) {
        let text = line.text;
        if line.truncated {
            let starts = text.trim_ascii_start().first() == Some(&b'{');
            if starts && line.last_nonspace == Some(b'}') {
                self.last = Some(Candidate::TooLarge);
            }
        } else if let Some(v) = protocol::parse_result_line(text) {
            self.last = Some(Candidate::Object(v));
        }
        if self.last.is_some() {
            // A qualifying line makes the trailing-block rule moot: stop buffering.
            self.block = None;
            self.block_oversized = false;
            return;
        }
        if text.first() == Some(&b'{') {
            self.block = Some(Vec::new());
            self.block_oversized = false;
        }
        if let Some(block) = &mut self.block {
            if line.truncated || block.len() + text.len() + 1 > self.limit {
                self.block = None;
                self.block_oversized = true;
            } else {
                block.extend_from_slice(text);
                block.push(b'\n');
            }
        }
    }

    /// The result stdout reported, once stdout is at EOF.
    pub fn finish(self) -> Extracted {
        match self.last {
            Some(Candidate::Object(v)) => Extracted::from_parsed(protocol::result_from_value(v)),
            Some(Candidate::TooLarge) => Extracted::TooLarge,
            None => match self.block {
                // Trailing whitespace (blank lines) is fine for serde_json.
                Some(block) => match protocol::parse_result(&block) {
                    Ok(found) => Extracted::from_parsed(Ok(found)),
                    Err(e @ ResultError::BadReason { .. }) => Extracted::Invalid(e.to_string()),
                    // Text that merely starts with `{` is a log, not a result.
                    Err(ResultError::NotJson(_) | ResultError::NoStatus) => Extracted::None,
                },
                None if self.block_oversized => Extracted::TooLarge,
                None => Extracted::None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn lines(input: &[u8], cap: usize) -> Vec<(Vec<u8>, bool)> {
        let mut r = LineReader::new(input, cap);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push((l.text.to_vec(), l.truncated));
        }
        out
    }

    /// Yields its data a few bytes at a time, to exercise lines spanning reads.
    struct Trickle<'a>(&'a [u8], usize);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            let (head, tail) = self.0.split_at(n);
            buf.put_slice(head);
            self.0 = tail;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn splits_and_strips_terminators() {
        let got = lines(b"a\r\nbb\n\nccc", 100).await;
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), false),
                (b"bb".to_vec(), false),
                (b"".to_vec(), false),
                (b"ccc".to_vec(), false)
            ]
        );
        assert!(lines(b"", 10).await.is_empty());
        assert_eq!(lines(b"x\n", 10).await, vec![(b"x".to_vec(), false)]);
    }

    #[tokio::test]
    async fn cuts_long_lines_in_and_across_buffers() {
        assert_eq!(
            lines(b"abcdef\nxy\n", 3).await,
            vec![(b"abc".to_vec(), true), (b"xy".to_vec(), false)]
        );
        // Exactly the cap, with CRLF: not a cut.
        assert_eq!(lines(b"abc\r\n", 3).await, vec![(b"abc".to_vec(), false)]);
        let big = vec![b'z'; 3 * READ_BUFFER + 17];
        let mut input = big.clone();
        input.extend_from_slice(b"\r\nend");
        let got = lines(&input, 1000).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, vec![b'z'; 1000]);
        assert!(got[0].1);
        assert_eq!(got[1], (b"end".to_vec(), false));
    }

    #[tokio::test]
    async fn assembles_lines_from_small_reads() {
        let data = b"hello world\r\n{\"status\":1}\nlast";
        for step in [1, 2, 3, 7] {
            let mut r = LineReader::new(Trickle(data, step), 64);
            let mut got = Vec::new();
            while let Some(l) = r.next_line().await.unwrap() {
                got.push(String::from_utf8(l.text.to_vec()).unwrap());
            }
            assert_eq!(
                got,
                ["hello world", "{\"status\":1}", "last"],
                "step {step}"
            );
        }
        let mut r = LineReader::new(Trickle(b"abcdef\r\nx", 2), 4);
        let l = r.next_line().await.unwrap().unwrap();
        assert_eq!(
            (l.text, l.truncated, l.last_nonspace),
            (&b"abcd"[..], true, Some(b'f'))
        );
    }

    #[tokio::test]
    async fn passes_invalid_utf8_through() {
        assert_eq!(
            lines(b"\xff\xfe ok\n", 10).await,
            vec![(b"\xff\xfe ok".to_vec(), false)]
        );
    }

    fn scan(input: &str, limit: usize) -> Extracted {
        let mut s = ResultScanner::new(limit);
        for l in input.split('\n') {
            let truncated = l.len() > limit;
            let mut line = Line::whole(&l.as_bytes()[..l.len().min(limit)]);
            line.truncated = truncated;
            line.last_nonspace = l.bytes().rev().find(|b| !b.is_ascii_whitespace());
            s.feed(line);
        }
        s.finish()
    }

    fn found(status: i64) -> impl Fn(&Extracted) -> bool {
        move |e| matches!(e, Extracted::Found(r, _) if r.status == status)
    }

    #[test]
    fn last_candidate_line_wins() {
        let out = "log\n{\"status\":2}\nmore log\n{\"status\":1,\"reason\":\"ok\",\"payload\":{\"a\":1}}\ntrailing log\n";
        let e = scan(out, 1 << 20);
        let Extracted::Found(r, raw) = e else {
            panic!("{e:?}")
        };
        assert_eq!(r.reason, "ok");
        assert_eq!(r.payload, json!({"a": 1}));
        assert_eq!(raw["payload"]["a"], 1);
        assert!(found(3)(&scan("{\"status\":1}\n  {\"status\": 3}  ", 100)));
    }

    #[test]
    fn no_candidate_is_none() {
        assert_eq!(
            scan("hello\n{\"reason\":\"no status\"}\n[1,2]", 100),
            Extracted::None
        );
        assert_eq!(scan("", 100), Extracted::None);
        assert_eq!(scan("{ not json at all\nbye", 100), Extracted::None);
    }

    #[test]
    fn pretty_printed_object_ending_stdout() {
        let out = "starting\n{\n  \"ignored\": true\n}\nwork\n{\n  \"status\": 1,\n  \"reason\": \"ok\",\n  \"payload\": {\n    \"n\": 1\n  }\n}\n\n\n";
        let e = scan(out, 1000);
        let Extracted::Found(r, _) = e else {
            panic!("{e:?}")
        };
        assert_eq!(r.payload, json!({"n": 1}));
        // Not at the end: it is not a result.
        assert_eq!(scan("{\n  \"status\": 1\n}\ndone", 1000), Extracted::None);
        // Larger than the limit.
        assert_eq!(
            scan(
                "{\n  \"status\": 1,\n  \"x\": \"aaaaaaaaaaaaaaaaaaaa\"\n}",
                20
            ),
            Extracted::TooLarge
        );
        // A later block replaces an oversized one.
        assert!(found(1)(&scan(
            "{\n\"x\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n}\n{\n\"status\":1\n}",
            20
        )));
    }

    #[test]
    fn invalid_and_oversized_candidates() {
        assert!(matches!(
            scan("{\"status\":1,\"reason\":5}", 100),
            Extracted::Invalid(m) if m.contains("reason")
        ));
        assert!(matches!(
            scan("{\n\"status\": 1,\n\"reason\": []\n}", 100),
            Extracted::Invalid(m) if m.contains("array")
        ));
        let long = format!("{{\"status\":1,\"payload\":\"{}\"}}", "x".repeat(200));
        assert_eq!(scan(&format!("log\n{long}\nlog"), 100), Extracted::TooLarge);
        // A later valid candidate still wins; a cut non-object line is just a log.
        assert!(found(1)(&scan(&format!("{long}\n{{\"status\":1}}"), 100)));
        assert_eq!(scan(&"y".repeat(500), 100), Extracted::None);
    }
}
