//! HTTP/1.1 wire pieces shared by the upstream client ([`crate::upstream`]) and the
//! client-facing fast lane ([`crate::fastlane`]): message framing, the chunked-body
//! decoder, header-name tests on raw bytes, the `Date` value, and [`Rewind`], a stream
//! that first gives back bytes already read (so a connection can change hands
//! mid-stream: to hyper, or to a WebSocket tunnel).
//!
//! Why own these instead of going through hyper for every message: hyper builds an
//! `http::Request`/`Response` with a `HeaderMap` for each message and runs the client
//! side of a connection as a separate task reached through channels. A gateway mostly
//! copies heads from one socket to another with a few headers changed; doing that on the
//! raw bytes removes most of the per-request work (see BENCHMARKS.md, "Throughput").

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where one header sits in the bytes of a head.
#[derive(Debug, Clone)]
pub struct HeaderPos {
    pub name: std::ops::Range<usize>,
    pub value: std::ops::Range<usize>,
}

/// Header positions of a parsed head, from `httparse` slices into `buf`.
pub fn header_positions(buf: &[u8], headers: &[httparse::Header<'_>], out: &mut Vec<HeaderPos>) {
    let base = buf.as_ptr() as usize;
    out.extend(headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        HeaderPos {
            name: name..name + h.name.len(),
            value: value..value + h.value.len(),
        }
    }));
}

/// A request or response head kept as the bytes that arrived, with its headers' places.
#[derive(Debug, Clone, Default)]
pub struct RawHeaders {
    pub raw: Bytes,
    pub positions: Vec<HeaderPos>,
    /// Set by a parser that saw every `Connection` header: none lists anything but
    /// hop-by-hop names (`keep-alive`, `upgrade`, ...), so [`ListedNames::of`] has
    /// nothing to find and need not look. `false` (the default) means "look".
    pub connection_plain: bool,
    /// Set by a parser that saw every header line end in CRLF ([`crate::head::Block`]):
    /// a run of header lines kept unchanged may be copied as the bytes that arrived.
    /// `false` (the default) means "write each line anew".
    pub crlf_lines: bool,
}

impl RawHeaders {
    /// Every header as `(name, value)`, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> {
        self.positions.iter().map(|h| {
            (
                self.raw.get(h.name.clone()).unwrap_or_default(),
                self.raw.get(h.value.clone()).unwrap_or_default(),
            )
        })
    }

    /// Every value of `lower` (a lower-case name), in order.
    pub fn values<'a>(&'a self, lower: &'a [u8]) -> impl DoubleEndedIterator<Item = &'a [u8]> {
        (0..self.positions.len()).filter_map(move |index| self.value_if_named(index, lower))
    }

    /// The value of header number `index` when its name is `lower`. Lengths are
    /// compared before any byte (hot path: a few lookups per message over every
    /// header).
    pub fn value_if_named(&self, index: usize, lower: &[u8]) -> Option<&[u8]> {
        let pos = self.positions.get(index)?;
        if pos.name.len() != lower.len()
            || !self.raw.get(pos.name.clone())?.eq_ignore_ascii_case(lower)
        {
            return None;
        }
        self.raw.get(pos.value.clone())
    }
}

/// The header names a message's `Connection` headers list (RFC 9110 §7.6.1: they are
/// hop-by-hop for this message). Names that are hop-by-hop anyway (`keep-alive`,
/// `upgrade`, ...) are left out, so the common `Connection: keep-alive` lists nothing
/// and costs nothing per header.
#[derive(Debug)]
pub struct ListedNames<'a> {
    names: [&'a [u8]; 8],
    len: usize,
    /// More than eight names: look them up in the headers again (never in practice).
    overflow: Option<&'a RawHeaders>,
}

impl<'a> ListedNames<'a> {
    pub fn of(headers: &'a RawHeaders) -> Self {
        let mut listed = ListedNames {
            names: [b""; 8],
            len: 0,
            overflow: None,
        };
        if headers.connection_plain {
            return listed;
        }
        for value in headers.values(b"connection").filter_map(header_str) {
            for token in value.split(',') {
                let token = token.trim().as_bytes();
                if token.is_empty() || is_hop_by_hop(token) {
                    continue;
                }
                match listed.names.get_mut(listed.len) {
                    Some(slot) => {
                        *slot = token;
                        listed.len += 1;
                    }
                    None => listed.overflow = Some(headers),
                }
            }
        }
        listed
    }

    /// Whether `name` is listed.
    pub fn contains(&self, name: &[u8]) -> bool {
        if self.len == 0 {
            return false;
        }
        self.names
            .iter()
            .take(self.len)
            .any(|t| t.len() == name.len() && name.eq_ignore_ascii_case(t))
            || self.overflow.is_some_and(|headers| {
                headers
                    .values(b"connection")
                    .filter_map(header_str)
                    .flat_map(|v| v.split(','))
                    .any(|t| name.eq_ignore_ascii_case(t.trim().as_bytes()))
            })
    }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD responses, 1xx/204/304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (a response without length; the connection is not reusable).
    UntilClose,
}

/// Longest chunk-size line accepted, extensions included. Real encoders write a few hex
/// digits; 4 KiB leaves room for extensions while bounding what a hostile peer can make
/// the gateway scan.
const MAX_CHUNK_LINE: usize = 4096;

/// Largest trailer section accepted after the last chunk (trailers are read and dropped:
/// HTTP/1.1 upstream trailers are not forwarded). 16 KiB is far above real trailers
/// (a checksum, a status) and bounds the work a hostile peer can cause.
const MAX_TRAILERS: usize = 16 * 1024;

/// Decoder state for a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the size line: hex digits so far, their value, and whether we are past
    /// the digits (in extensions or whitespace).
    Size {
        value: u64,
        digits: u8,
        past: bool,
        len: usize,
    },
    /// Got `\r` of the size line.
    SizeLf {
        value: u64,
    },
    /// This many data bytes of the current chunk remain.
    Data(u64),
    /// Expecting the `\r\n` after a chunk's data.
    DataCr,
    DataLf,
    /// In the trailer section: bytes on the current line, total trailer bytes.
    Trailer {
        line: usize,
        total: usize,
    },
    /// Got `\r` in the trailer section.
    TrailerLf {
        line: usize,
        total: usize,
    },
    Done,
}

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete piece: read more.
    NeedMore,
    /// The body (and its trailers) ended.
    End,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError;

/// Incremental `Transfer-Encoding: chunked` decoder over a read buffer: every call
/// consumes what it can from the front of the buffer.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: Chunk,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: Chunk::Size {
                value: 0,
                digits: 0,
                past: false,
                len: 0,
            },
        }
    }
}

impl ChunkedDecoder {
    /// Consume from `buf` until a piece of data, the end, or the buffer runs out.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            if let Chunk::Data(remaining) = self.state {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                return Ok(Decoded::Data(data));
            }
            if self.state == Chunk::Done {
                return Ok(Decoded::End);
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.state = match self.state {
                Chunk::Size {
                    value,
                    digits,
                    past,
                    len,
                } => {
                    if len >= MAX_CHUNK_LINE {
                        return Err(ChunkError);
                    }
                    match byte {
                        b'\r' if digits > 0 => Chunk::SizeLf { value },
                        b'\n' if digits > 0 => after_size(value),
                        _ if !past && byte.is_ascii_hexdigit() => {
                            // 16 hex digits fill a u64; more would overflow.
                            if digits >= 15 {
                                return Err(ChunkError);
                            }
                            let digit = u64::from(hex_value(byte));
                            Chunk::Size {
                                value: value * 16 + digit,
                                digits: digits + 1,
                                past,
                                len: len + 1,
                            }
                        }
                        b';' | b' ' | b'\t' if digits > 0 => Chunk::Size {
                            value,
                            digits,
                            past: true,
                            len: len + 1,
                        },
                        // Extension text after the `;`.
                        _ if past && byte != b'\n' => Chunk::Size {
                            value,
                            digits,
                            past,
                            len: len + 1,
                        },
                        _ => return Err(ChunkError),
                    }
                }
                Chunk::SizeLf { value } => {
                    if byte != b'\n' {
                        return Err(ChunkError);
                    }
                    after_size(value)
                }
                Chunk::DataCr => match byte {
                    b'\r' => Chunk::DataLf,
                    b'\n' => fresh_size(),
                    _ => return Err(ChunkError),
                },
                Chunk::DataLf => {
                    if byte != b'\n' {
                        return Err(ChunkError);
                    }
                    fresh_size()
                }
                Chunk::Trailer { line, total } => {
                    if total >= MAX_TRAILERS {
                        return Err(ChunkError);
                    }
                    match byte {
                        b'\r' => Chunk::TrailerLf { line, total },
                        b'\n' if line == 0 => Chunk::Done,
                        b'\n' => Chunk::Trailer {
                            line: 0,
                            total: total + 1,
                        },
                        _ => Chunk::Trailer {
                            line: line + 1,
                            total: total + 1,
                        },
                    }
                }
                Chunk::TrailerLf { line, total } => {
                    if byte != b'\n' {
                        return Err(ChunkError);
                    }
                    if line == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Trailer {
                            line: 0,
                            total: total + 2,
                        }
                    }
                }
                Chunk::Data(_) | Chunk::Done => unreachable_state(),
            };
        }
    }
}

fn fresh_size() -> Chunk {
    Chunk::Size {
        value: 0,
        digits: 0,
        past: false,
        len: 0,
    }
}

fn after_size(value: u64) -> Chunk {
    if value == 0 {
        Chunk::Trailer { line: 0, total: 0 }
    } else {
        Chunk::Data(value)
    }
}

/// The loop handles `Data` and `Done` before reading a byte; this arm cannot be reached,
/// and ending the body is the harmless answer if it ever were.
fn unreachable_state() -> Chunk {
    Chunk::Done
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

/// Append the chunked-encoding prefix for `len` data bytes (`{len:x}\r\n`).
pub fn chunk_prefix(len: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "{len:x}\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Whether `name` equals the lower-case `lower`, ignoring ASCII case.
#[inline]
pub fn name_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// A header value as text when it is visible ASCII (tab and space allowed), the same
/// test as `http::HeaderValue::to_str`, so both lanes read values alike.
pub fn header_str(value: &[u8]) -> Option<&str> {
    if value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// What one `Connection` header value lists, read in one pass (the parsers' view).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// A token that is not a hop-by-hop header name (`close` included: it names a
    /// header too), so [`ListedNames`] must look at the value.
    pub names_other: bool,
}

impl ConnectionTokens {
    pub fn of(value: &[u8]) -> Self {
        let mut tokens = ConnectionTokens::default();
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            if item.eq_ignore_ascii_case(b"keep-alive") {
                tokens.keep_alive = true;
            } else if item.eq_ignore_ascii_case(b"upgrade") {
                tokens.upgrade = true;
            } else {
                tokens.close |= item.eq_ignore_ascii_case(b"close");
                tokens.names_other |= !is_hop_by_hop(item);
            }
        }
        tokens
    }
}

/// The hop-by-hop headers RFC 9110 §7.6.1 names, plus the legacy `Keep-Alive` and
/// `Proxy-Connection` (the same list as [`crate::headers`], on raw bytes).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // By length first: most names are ruled out without comparing bytes (hot path,
    // every header of every request and response).
    match name.len() {
        2 => name_is(name, b"te"),
        7 => name_is(name, b"trailer") || name_is(name, b"upgrade"),
        10 => name_is(name, b"connection") || name_is(name, b"keep-alive"),
        16 => name_is(name, b"proxy-connection"),
        17 => name_is(name, b"transfer-encoding"),
        18 => name_is(name, b"proxy-authenticate"),
        19 => name_is(name, b"proxy-authorization"),
        _ => false,
    }
}

/// Parse a `Content-Length` value: ASCII digits only (RFC 9110 §8.6; a list of equal
/// values is what some senders write, and is accepted as one value).
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    // The usual value: one number, digits only (no split, no UTF-8 check, no `parse`).
    if !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit) {
        return Some(
            value
                .iter()
                .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0')),
        );
    }
    let mut result: Option<u64> = None;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) || item.len() > 19 {
            return None;
        }
        let n = std::str::from_utf8(item).ok()?.parse::<u64>().ok()?;
        match result {
            Some(previous) if previous != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

/// The reason phrase sent with a status (the canonical one, as hyper writes; an unknown
/// code gets an empty phrase, which HTTP/1.1 allows).
pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// The `Date` header value, rendered at most once a second per thread. `now` is an
/// instant the caller already read (the request's start): the wall clock is read only
/// when a new second may have begun.
pub fn date_value(now: tokio::time::Instant) -> [u8; 29] {
    use std::cell::Cell;
    thread_local! {
        /// The rendered value and the instant until which it stays right.
        static CACHE: Cell<Option<([u8; 29], tokio::time::Instant)>> = const { Cell::new(None) };
    }
    CACHE.with(|cache| {
        if let Some((value, until)) = cache.get()
            && now < until
        {
            return value;
        }
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let text = httpdate(wall.as_secs());
        let mut value = [b' '; 29];
        for (slot, b) in value.iter_mut().zip(text.bytes()) {
            *slot = b;
        }
        let rest_of_second = std::time::Duration::from_secs(1).saturating_sub(
            std::time::Duration::from_nanos(u64::from(wall.subsec_nanos())),
        );
        cache.set(Some((value, now + rest_of_second)));
        value
    })
}

/// Append the decimal digits of `n` (no allocation).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    // One digit: what most latency headers (whole milliseconds) print.
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(slot) = digits.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for seconds since the epoch.
fn httpdate(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS.get((month - 1) as usize).copied().unwrap_or("Jan");
    format!("{weekday}, {day:02} {month_name} {year} {hour:02}:{minute:02}:{second:02} GMT")
}

/// A stream that first yields `prefix` (bytes already read from it), then reads from
/// the stream itself. Writes go straight through.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Write every byte of `slices` (vectored; partial writes are resumed). Returns how many
/// bytes went out before an error, with the error, so callers can tell "nothing was
/// sent" from "the request was cut".
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    slices: &mut [io::IoSlice<'_>],
) -> Result<(), (usize, io::Error)> {
    use tokio::io::AsyncWriteExt as _;
    let mut written = 0usize;
    // Empty slices out, wherever they are: each one is an `iovec` the kernel imports
    // and steps over (callers pass fixed five-slice frames, mostly empty), and without
    // them `advance_slices` never sees a zero-length write as progress.
    let mut kept = 0;
    for index in 0..slices.len() {
        if !slices[index].is_empty() {
            slices.swap(kept, index);
            kept += 1;
        }
    }
    let mut slices = &mut slices[..kept];
    while let Some(first) = slices.first() {
        // One buffer (a whole small response, most requests) goes out with `write`,
        // not a one-element `writev`.
        let result = if slices.len() == 1 {
            let one: &[u8] = first;
            writer.write(one).await
        } else {
            writer.write_vectored(slices).await
        };
        match result {
            Ok(0) => {
                return Err((
                    written,
                    io::Error::new(io::ErrorKind::WriteZero, "connection closed while writing"),
                ));
            }
            Ok(n) => {
                written += n;
                io::IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    /// Takes at most `step` bytes per call and notes which kind of call it was.
    struct Trickle {
        step: usize,
        got: Vec<u8>,
        calls: Vec<&'static str>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            self.calls.push("write");
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            assert!(
                bufs.iter().all(|b| !b.is_empty()),
                "no empty iovec reaches the kernel"
            );
            let mut left = self.step;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(left);
                self.got.extend_from_slice(&buf[..take]);
                n += take;
                left -= take;
            }
            self.calls.push("writev");
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Whatever the empty slices and however short the writes, the bytes arrive whole
    /// and in order; a single buffer goes out with `write`, several with `writev`.
    #[tokio::test]
    async fn vectored_writes_skip_empty_slices_and_survive_short_writes() {
        // (slices, bytes the writer takes per call, the calls it sees)
        type Case<'a> = (&'a [&'a [u8]], usize, &'a [&'a str]);
        let cases: [Case<'_>; 4] = [
            (&[b"head+body", b"", b"", b"", b""], 64, &["write"]),
            (&[b"", b"ab", b"", b"cd", b""], 64, &["writev"]),
            (
                &[b"abc", b"", b"defg"],
                2,
                &["writev", "writev", "write", "write"],
            ),
            (&[b"", b""], 64, &[]),
        ];
        for (parts, step, calls) in cases {
            let mut slices: Vec<io::IoSlice<'_>> =
                parts.iter().map(|p| io::IoSlice::new(p)).collect();
            let mut writer = Trickle {
                step,
                got: Vec::new(),
                calls: Vec::new(),
            };
            write_all_vectored(&mut writer, &mut slices)
                .await
                .expect("written");
            assert_eq!(writer.got, parts.concat(), "{parts:?}");
            assert_eq!(writer.calls, calls, "{parts:?} in steps of {step}");
        }
    }

    /// One pass over a `Connection` value finds the options the parsers act on and
    /// whether it names any header that is not hop-by-hop anyway.
    #[test]
    fn connection_tokens_are_read_in_one_pass() {
        let cases: [(&[u8], ConnectionTokens); 5] = [
            (
                b"keep-alive",
                ConnectionTokens {
                    keep_alive: true,
                    ..Default::default()
                },
            ),
            (
                b" Close ",
                ConnectionTokens {
                    close: true,
                    names_other: true,
                    ..Default::default()
                },
            ),
            (
                b"Upgrade, keep-alive",
                ConnectionTokens {
                    upgrade: true,
                    keep_alive: true,
                    ..Default::default()
                },
            ),
            (
                b"te, , x-trace",
                ConnectionTokens {
                    names_other: true,
                    ..Default::default()
                },
            ),
            (b"", ConnectionTokens::default()),
        ];
        for (value, expected) in cases {
            assert_eq!(
                ConnectionTokens::of(value),
                expected,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        for point in points {
            if point > fed {
                buf.extend_from_slice(&input[fed..point]);
                fed = point;
            }
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((out, buf.len())),
                }
            }
        }
        Err(ChunkError)
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let input = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-check: 1\r\n\r\nNEXT";
        let (body, left) = decode_all(input, &[]).expect("valid");
        assert_eq!(body, b"hello world");
        assert_eq!(left, 4, "bytes after the body stay in the buffer");
        let (body, _) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", &[]).expect("upper hex");
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert_eq!(decode_all(bad, &[]), Err(ChunkError), "{bad:?}");
        }
    }

    proptest! {
        /// However the bytes arrive, the decoded body is the same.
        #[test]
        fn chunked_decoding_does_not_depend_on_how_bytes_arrive(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut encoded = Vec::new();
            let mut expected = Vec::new();
            for chunk in &chunks {
                chunk_prefix(chunk.len(), &mut encoded);
                encoded.extend_from_slice(chunk);
                encoded.extend_from_slice(b"\r\n");
                expected.extend_from_slice(chunk);
            }
            encoded.extend_from_slice(LAST_CHUNK);
            let (body, left) = decode_all(&encoded, &cuts).expect("valid encoding");
            prop_assert_eq!(body, expected);
            prop_assert_eq!(left, 0);
        }

        /// Garbage never panics the decoder.
        #[test]
        fn chunked_decoding_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_all(&input, &[3, 7, 50]);
        }
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"42, 42"), Some(42));
        assert_eq!(parse_content_length(b"42, 43"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b"+1"), None);
        assert_eq!(parse_content_length(b""), None);
        // The digits-only fast path: leading zeros, the longest accepted value, and one
        // digit more (which could overflow) refused.
        assert_eq!(parse_content_length(b"007"), Some(7));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(parse_content_length(b"18446744073709551615"), None);
        assert_eq!(parse_content_length(b" 42 "), Some(42));
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(httpdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(httpdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(httpdate(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date_value(tokio::time::Instant::now()).len(), 29);
        let mut out = Vec::new();
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn tokens_and_hop_by_hop_names() {
        assert!(ConnectionTokens::of(b"keep-alive, Upgrade").upgrade);
        assert!(!ConnectionTokens::of(b"keep-alive").close);
        assert!(is_hop_by_hop(b"Transfer-Encoding"));
        assert!(!is_hop_by_hop(b"x-te"));
    }
}
