//! The stdio transport's framing: one JSON-RPC message per line, with a
//! `-32700` parse error answered for a line that is not JSON.
//!
//! rmcp ignores unparsable lines on purpose (its PR #940: no other official
//! SDK answers them, and answering a peer that answers with more garbage
//! could bounce errors back and forth). JSON-RPC 2.0 asks for the error,
//! and a client that sent garbage is better told than left waiting, so we
//! answer, at most [`REPLIES_PER_SECOND`] a second: a storm is cut short
//! and logged, not fed. Valid lines pass to rmcp unchanged through an
//! in-memory pipe; everything rmcp writes, and our error replies, reach
//! stdout whole, one line at a time, through one writer.

use std::time::{Duration, Instant};

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::mpsc;

/// The most parse-error replies sent in a second.
pub const REPLIES_PER_SECOND: u32 = 10;
/// The longest line read (rmcp's own limit, which it enforces again).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Bytes in flight in each in-memory pipe.
const PIPE: usize = 64 * 1024;

/// Wires `input`/`output` (the process's stdin/stdout) to the pair rmcp
/// serves on; the copying runs on tasks of the current runtime until
/// either side closes.
pub fn filtered<R, W>(input: R, output: W) -> (DuplexStream, DuplexStream)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, rmcp_reads) = tokio::io::duplex(PIPE);
    let (rmcp_writes, from_rmcp) = tokio::io::duplex(PIPE);
    let (lines, mut to_stdout) = mpsc::channel::<Vec<u8>>(64);

    // One writer: whole lines, in the order they were handed over.
    tokio::spawn(async move {
        let mut output = output;
        while let Some(line) = to_stdout.recv().await {
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });

    // rmcp's output, line by line.
    let replies = lines.clone();
    tokio::spawn(async move {
        let mut from_rmcp = BufReader::new(from_rmcp);
        loop {
            let mut line = Vec::new();
            match from_rmcp.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if replies.send(line).await.is_err() {
                        break;
                    }
                }
            }
        }
    });

    // stdin: JSON on to rmcp, anything else answered.
    tokio::spawn(async move {
        let mut input = BufReader::new(input);
        let mut to_rmcp = to_rmcp;
        let mut limit = ReplyLimit::new();
        loop {
            let mut line = Vec::new();
            match (&mut input)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.len() > MAX_LINE && !line.ends_with(b"\n") {
                // rmcp drops such a line; so do we, with the rest of it.
                skip_rest_of_line(&mut input).await;
                tracing::error!("an incoming line exceeded {MAX_LINE} bytes; dropped");
                continue;
            }
            match check(&line) {
                Line::Message => {
                    if to_rmcp.write_all(&line).await.is_err() {
                        break;
                    }
                }
                Line::Blank => {}
                Line::Garbage(why) if limit.allow(Instant::now()) => {
                    if lines.send(parse_error(&why)).await.is_err() {
                        break;
                    }
                }
                Line::Garbage(why) => {
                    tracing::warn!("not answering another unparsable line ({why}): too many");
                }
            }
        }
        let _ = to_rmcp.shutdown().await;
    });

    (rmcp_reads, rmcp_writes)
}

async fn skip_rest_of_line<R: AsyncBufReadExt + Unpin>(input: &mut R) {
    loop {
        let (found, used) = match input.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(buf) => match memchr_newline(buf) {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            },
        };
        input.consume(used);
        if found {
            return;
        }
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// What an incoming line is.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// JSON: rmcp decides whether it is a valid message.
    Message,
    /// Nothing but whitespace.
    Blank,
    /// Not JSON; why.
    Garbage(String),
}

fn check(line: &[u8]) -> Line {
    let text = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if text.trim_ascii().is_empty() {
        return Line::Blank;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        Ok(_) => Line::Message,
        Err(e) => Line::Garbage(e.to_string()),
    }
}

/// The JSON-RPC 2.0 parse error reply (its id is null: none could be read).
fn parse_error(why: &str) -> Vec<u8> {
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32700, "message": format!("Parse error: {why}")},
    });
    let mut line = serde_json::to_vec(&reply).expect("a JSON value serializes");
    line.push(b'\n');
    line
}

/// At most [`REPLIES_PER_SECOND`] replies in any one-second window.
struct ReplyLimit {
    window: Instant,
    sent: u32,
}

impl ReplyLimit {
    fn new() -> Self {
        Self {
            window: Instant::now(),
            sent: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.sent = 0;
        }
        self.sent += 1;
        self.sent <= REPLIES_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_blanks_or_garbage() {
        assert_eq!(check(b"{\"jsonrpc\":\"2.0\"}\n"), Line::Message);
        assert_eq!(check(b"\xEF\xBB\xBF{}\r\n"), Line::Message);
        assert_eq!(check(b"[1, 2]\n"), Line::Message);
        assert_eq!(check(b"  \r\n"), Line::Blank);
        assert!(matches!(check(b"hello\n"), Line::Garbage(_)));
        assert!(matches!(check(b"{\"a\":\n"), Line::Garbage(_)));
        assert!(matches!(check(b"\xff\xfe\n"), Line::Garbage(_)));
    }

    #[test]
    fn the_reply_is_a_json_rpc_parse_error() {
        let reply: serde_json::Value = serde_json::from_slice(&parse_error("x")).unwrap();
        assert_eq!(reply["error"]["code"], -32700);
        assert_eq!(reply["id"], serde_json::Value::Null);
        assert_eq!(reply["jsonrpc"], "2.0");
    }

    #[test]
    fn replies_are_limited_per_second() {
        let mut limit = ReplyLimit::new();
        let t0 = limit.window;
        let allowed = (0..25).filter(|_| limit.allow(t0)).count();
        assert_eq!(allowed, REPLIES_PER_SECOND as usize);
        assert!(limit.allow(t0 + Duration::from_millis(1001)));
    }

    #[tokio::test]
    async fn garbage_is_answered_and_messages_pass_through() {
        use tokio::io::AsyncReadExt;
        let (mut client_in, server_in) = tokio::io::duplex(1024);
        let (server_out, mut client_out) = tokio::io::duplex(1024);
        let (mut rmcp_reads, mut rmcp_writes) = filtered(server_in, server_out);
        client_in
            .write_all(b"not json\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
            .await
            .unwrap();
        drop(client_in);
        let mut passed = String::new();
        rmcp_reads.read_to_string(&mut passed).await.unwrap();
        assert_eq!(
            passed,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n"
        );
        rmcp_writes.write_all(b"{\"id\":1}\n").await.unwrap();
        drop(rmcp_writes);
        let mut got = String::new();
        client_out.read_to_string(&mut got).await.unwrap();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 2, "{got}");
        assert!(lines[0].contains("-32700"), "{got}");
        assert_eq!(lines[1], "{\"id\":1}");
    }
}
