//! Frames: `Content-Length: N\r\n[Content-Type: T\r\n]\r\n` + N bytes, as in the Language
//! Server Protocol. Every read is bounded: header lines, header count and body size.

use std::io::{self, BufRead, Read, Write};

/// Largest frame body accepted, in bytes (256 MiB); a larger one is a protocol violation.
pub const MAX_FRAME_BYTES: u64 = 256 * 1024 * 1024;
/// Longest header line accepted, in bytes, CRLF included.
pub const MAX_HEADER_LINE_BYTES: u64 = 1024;
/// Most header lines in one frame.
pub const MAX_HEADER_LINES: usize = 16;
/// `Content-Type` of a frame holding an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// `Content-Type` of a control message (also the default).
pub const JSON: &str = "application/json";

/// One frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The `Content-Type` header, when given.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Frame {
    /// True when the frame is a control message (JSON).
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_none_or(|t| t == JSON)
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed or ended inside a frame.
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a frame.
    #[error("{0}")]
    Malformed(String),
    /// `Content-Length` is above [`MAX_FRAME_BYTES`].
    #[error("frame of {bytes} bytes is larger than the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge {
        /// The announced length.
        bytes: u64,
    },
}

/// Reads one frame; `Ok(None)` when the stream ends before its first byte.
///
/// # Errors
/// [`FrameError`] when the stream fails, ends inside the frame, or does not hold a frame.
pub fn read_frame(reader: &mut impl BufRead) -> Result<Option<Frame>, FrameError> {
    let mut content_length = None;
    let mut content_type = None;
    let mut line = Vec::with_capacity(64);
    for index in 0..=MAX_HEADER_LINES {
        line.clear();
        let n = reader.by_ref().take(MAX_HEADER_LINE_BYTES).read_until(b'\n', &mut line)?;
        if n == 0 {
            if index == 0 {
                return Ok(None);
            }
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return Err(FrameError::Malformed(format!(
                "expected a header line ended by CRLF, got {}",
                preview(&line)
            )));
        };
        if text.is_empty() {
            let Some(bytes) = content_length else {
                return Err(FrameError::Malformed("frame without Content-Length".into()));
            };
            if bytes > MAX_FRAME_BYTES {
                return Err(FrameError::TooLarge { bytes });
            }
            // Grow as bytes arrive rather than trusting the announced length up front.
            let mut body = Vec::with_capacity(bytes.min(1 << 20) as usize);
            reader.by_ref().take(bytes).read_to_end(&mut body)?;
            if body.len() as u64 != bytes {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            return Ok(Some(Frame { content_type, body }));
        }
        let text = std::str::from_utf8(text).map_err(|_| {
            FrameError::Malformed(format!("header is not text: {}", preview(&line)))
        })?;
        let Some((name, value)) = text.split_once(':') else {
            return Err(FrameError::Malformed(format!("malformed header line {}", preview(&line))));
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-length") {
            let bytes = value.parse::<u64>().map_err(|_| {
                FrameError::Malformed(format!("Content-Length `{value}` is not a number"))
            })?;
            content_length = Some(bytes);
        } else if name.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        }
    }
    Err(FrameError::Malformed(format!("more than {MAX_HEADER_LINES} header lines")))
}

/// Writes one frame (does not flush).
///
/// # Errors
/// The writer's error.
pub fn write_frame(
    writer: &mut impl Write,
    content_type: Option<&str>,
    body: &[u8],
) -> io::Result<()> {
    write!(writer, "Content-Length: {}\r\n", body.len())?;
    if let Some(t) = content_type {
        write!(writer, "Content-Type: {t}\r\n")?;
    }
    writer.write_all(b"\r\n")?;
    writer.write_all(body)
}

/// The first bytes of `bytes`, escaped, for error messages.
fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(60)];
    format!("\"{}\"{}", shown.escape_ascii(), if bytes.len() > 60 { "..." } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<Result<Option<Frame>, String>> {
        let mut reader = io::BufReader::new(bytes);
        let mut out = Vec::new();
        loop {
            let r = read_frame(&mut reader).map_err(|e| e.to_string());
            let stop = !matches!(r, Ok(Some(_)));
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn round_trip_with_and_without_content_type() {
        let mut buf = Vec::new();
        write_frame(&mut buf, None, b"{\"a\":1}").expect("vec");
        write_frame(&mut buf, Some(ARROW_STREAM), &[0, 1, 2, 255]).expect("vec");
        let frames = read_all(&buf);
        assert_eq!(frames.len(), 3);
        let first = frames[0].as_ref().expect("ok").as_ref().expect("frame");
        assert_eq!(first.body, b"{\"a\":1}");
        assert!(first.is_json());
        let second = frames[1].as_ref().expect("ok").as_ref().expect("frame");
        assert_eq!(second.content_type.as_deref(), Some(ARROW_STREAM));
        assert_eq!(second.body, [0, 1, 2, 255]);
        assert_eq!(frames[2], Ok(None));
    }

    #[test]
    fn header_names_are_case_insensitive_and_unknown_ignored() {
        let frames = read_all(b"content-length: 2\r\nX-Other: y\r\n\r\nhi");
        assert_eq!(frames[0].as_ref().expect("ok").as_ref().expect("frame").body, b"hi");
    }

    #[test]
    fn violations() {
        let first = |b: &[u8]| read_all(b).remove(0).expect_err("refused");
        assert!(first(b"hello world\n").contains("CRLF"), "{}", first(b"hello world\n"));
        assert!(first(b"garbage\r\n\r\n").contains("malformed"));
        assert!(first(b"Content-Type: x\r\n\r\n").contains("without Content-Length"));
        assert!(first(b"Content-Length: abc\r\n\r\n").contains("not a number"));
        let too_large = format!("Content-Length: {}\r\n\r\n", MAX_FRAME_BYTES + 1);
        assert!(first(too_large.as_bytes()).contains("larger than the limit"));
        assert!(first(b"Content-Length: 10\r\n\r\nabc").contains("reading"));
        assert!(first(b"Content-Length: 10\r\n").contains("reading"));
        let long_line = vec![b'x'; 5000];
        assert!(first(&long_line).contains("CRLF"));
        // A well-formed header line is read up to MAX_HEADER_LINE_BYTES (CRLF included), and
        // refused one byte past it.
        let padded = |line_bytes: usize| {
            let pad = "p".repeat(line_bytes - "X-Pad: \r\n".len());
            format!("X-Pad: {pad}\r\nContent-Length: 2\r\n\r\nhi").into_bytes()
        };
        let at_limit = read_all(&padded(MAX_HEADER_LINE_BYTES as usize));
        assert_eq!(at_limit[0].as_ref().expect("ok").as_ref().expect("frame").body, b"hi");
        let over = first(&padded(MAX_HEADER_LINE_BYTES as usize + 1));
        assert!(over.contains("expected a header line ended by CRLF, got \"X-Pad: ppp"), "{over}");
        let many = "X: y\r\n".repeat(MAX_HEADER_LINES + 1);
        assert!(first(many.as_bytes()).contains("header lines"));
    }
}
