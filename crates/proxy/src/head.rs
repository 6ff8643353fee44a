//! HTTP/1.x message heads parsed in one pass, straight into header positions: the
//! response status line (the upstream client, [`crate::upstream`]), the request line
//! (the fast lane, [`crate::fastlane`]) and the header block both share.
//!
//! Why not `httparse` here (hyper's parser, still used by hyper's lane and the tests):
//! it hands back `&str`/`&[u8]` slices that a second pass turned into positions, and for
//! the seven-header response of the benchmark backend this parser takes 88 ns against
//! httparse's 97 ns, and `wrk`'s request 22 against 34 ns (`cargo bench -p sluice-proxy
//! --bench head`; BENCHMARKS.md, "Session 5"). The rules below are httparse's default
//! `ParserConfig`, byte for byte: the property tests at the end feed both parsers the
//! same bytes (valid heads, every prefix of them, and mutations) and require the same
//! verdict (complete at the same length, incomplete, or invalid) and the same headers.
//! The one deliberate difference is in [`request_line`], which accepts only what the
//! fast lane serves (see there); what it refuses goes to hyper, which decides.

use crate::wire::HeaderPos;

/// A head that cannot become valid whatever bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// A parse that may need more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    /// Every byte so far is valid; the head has not ended yet.
    Partial,
}

/// `Status::Partial` as an early return, for the many places a byte may be missing.
macro_rules! byte_at {
    ($buf:expr, $at:expr) => {
        match $buf.get($at) {
            Some(&b) => b,
            None => return Ok(Status::Partial),
        }
    };
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a header name or a method.
static TOKEN: [bool; 256] = {
    let mut map = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        map[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    map
};

/// Whether `b` may appear in a header value (HTAB, SP, VCHAR, obs-text).
#[inline]
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// The first index at or after `at` that is not a value byte (a line end, a control
/// byte), or `buf.len()`. Eight bytes at a time: most of a head is header values (a
/// `Date` is 29 bytes), and a word test costs what one byte test does.
#[inline]
fn value_end(buf: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = buf.get(at..at + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // A byte below 0x20 (borrows into its high bit while its own high bit is
        // clear), or a byte equal to 0x7f. The lowest flagged byte is exact; flags above
        // it may be false (borrows), and are never looked at.
        let below_space = x.wrapping_sub(0x20 * ONES) & !x & HIGHS;
        let del = x ^ (0x7f * ONES);
        let is_del = del.wrapping_sub(ONES) & !del & HIGHS;
        let flagged = below_space | is_del;
        if flagged == 0 {
            at += 8;
            continue;
        }
        at += (flagged.trailing_zeros() / 8) as usize;
        // A tab is a value byte that the word test flags (it is below 0x20).
        if buf.get(at) == Some(&b'\t') {
            at += 1;
            continue;
        }
        return at;
    }
    while buf.get(at).is_some_and(|&b| is_value_byte(b)) {
        at += 1;
    }
    at
}

/// The first index at or after `at` whose byte is not a `tchar`, or `buf.len()`. Eight
/// bytes at a time while they are letters, digits or `-`, which is what header names are
/// made of in practice; from the first other byte on, the table decides byte by byte.
#[inline]
fn token_end(buf: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Per byte of `x` (each below 0x80, so no sum carries into the next byte): the high
    // bit of `x + (0x80 - lo)` is set when the byte is at least `lo`, that of
    // `x + (0x7f - hi)` when it is above `hi`.
    #[inline]
    fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
        x.wrapping_add(u64::from(0x80 - lo) * ONES) & !x.wrapping_add(u64::from(0x7f - hi) * ONES)
    }
    while let Some(word) = buf.get(at..at + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let ascii = !x & HIGHS;
        let low7 = x & !HIGHS;
        // `| 0x20` maps A-Z onto a-z and nothing else into that range.
        let fast = (in_range(low7 | (0x20 * ONES), b'a', b'z')
            | in_range(low7, b'0', b'9')
            | in_range(low7, b'-', b'-'))
            & ascii;
        if fast == HIGHS {
            at += 8;
            continue;
        }
        at += ((!fast & HIGHS).trailing_zeros() / 8) as usize;
        break;
    }
    while buf.get(at).is_some_and(|&b| TOKEN[b as usize]) {
        at += 1;
    }
    at
}

/// After a `\r` at `at`: the index past its `\n`.
#[inline]
fn after_crlf(buf: &[u8], at: usize) -> Result<Status<usize>, Invalid> {
    match buf.get(at + 1) {
        Some(b'\n') => Ok(Status::Complete(at + 2)),
        Some(_) => Err(Invalid),
        None => Ok(Status::Partial),
    }
}

/// Leading empty lines, which a recipient ignores (RFC 9112 §2.2): the index of the
/// first byte of the start line.
#[inline]
fn skip_empty_lines(buf: &[u8], mut at: usize) -> Result<Status<usize>, Invalid> {
    loop {
        match byte_at!(buf, at) {
            b'\r' => match after_crlf(buf, at)? {
                Status::Complete(next) => at = next,
                Status::Partial => return Ok(Status::Partial),
            },
            b'\n' => at += 1,
            _ => return Ok(Status::Complete(at)),
        }
    }
}

/// `HTTP/1.0` or `HTTP/1.1` at `at`: the minor version. Fewer than eight bytes that
/// could still become one are `Partial`.
#[inline]
fn version(buf: &[u8], at: usize) -> Result<Status<u8>, Invalid> {
    match buf.get(at..at + 8) {
        Some(b"HTTP/1.1") => Ok(Status::Complete(1)),
        Some(b"HTTP/1.0") => Ok(Status::Complete(0)),
        Some(_) => Err(Invalid),
        None => {
            let rest = buf.get(at..).unwrap_or_default();
            let prefix = b"HTTP/1.".get(..rest.len()).unwrap_or(b"HTTP/1.");
            if rest.starts_with(prefix) {
                Ok(Status::Partial)
            } else {
                Err(Invalid)
            }
        }
    }
}

/// A complete header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The head's length (the end of its empty last line).
    pub end: usize,
    /// Every header line, and the empty last line, ends in CRLF (none in a bare LF, which
    /// a recipient may accept but a sender must not send: RFC 9112 §2.2). Such lines
    /// may be copied on whole.
    pub crlf_only: bool,
}

/// The header lines from `at` to the empty line that ends the head, appended to `out`
/// as positions in `buf` (values without the spaces around them). More than `max`
/// headers is invalid (once the extra line is whole, as httparse does).
pub fn header_block(
    buf: &[u8],
    mut at: usize,
    max: usize,
    out: &mut Vec<HeaderPos>,
) -> Result<Status<Block>, Invalid> {
    let mut count = 0;
    let mut crlf_only = true;
    loop {
        let first = byte_at!(buf, at);
        if first == b'\r' {
            return Ok(match after_crlf(buf, at)? {
                Status::Complete(end) => Status::Complete(Block { end, crlf_only }),
                Status::Partial => Status::Partial,
            });
        }
        if first == b'\n' {
            return Ok(Status::Complete(Block {
                end: at + 1,
                crlf_only: false,
            }));
        }
        // The name: one or more tchars, then the colon at once (no space before it).
        let name_start = at;
        at = token_end(buf, at);
        if byte_at!(buf, at) != b':' || at == name_start {
            return Err(Invalid);
        }
        let name = name_start..at;
        at += 1;
        while matches!(byte_at!(buf, at), b' ' | b'\t') {
            at += 1;
        }
        let value_start = at;
        at = value_end(buf, at);
        let line_end = at;
        at = match byte_at!(buf, at) {
            b'\r' => match after_crlf(buf, at)? {
                Status::Complete(next) => next,
                Status::Partial => return Ok(Status::Partial),
            },
            b'\n' => {
                crlf_only = false;
                at + 1
            }
            // A control byte inside the value (an obs-fold would need a line start).
            _ => return Err(Invalid),
        };
        let mut value_stop = line_end;
        while value_stop > value_start && matches!(buf.get(value_stop - 1), Some(b' ' | b'\t')) {
            value_stop -= 1;
        }
        if count == max {
            return Err(Invalid);
        }
        count += 1;
        out.push(HeaderPos {
            name,
            value: value_start..value_stop,
        });
    }
}

/// A response's status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub code: u16,
    /// Where the header block starts.
    pub end: usize,
}

/// `HTTP/1.x SP 3DIGIT [SP reason] CRLF` (a bare LF ends a line too; the reason may be
/// absent, as httparse allows).
pub fn status_line(buf: &[u8]) -> Result<Status<StatusLine>, Invalid> {
    let at = match skip_empty_lines(buf, 0)? {
        Status::Complete(at) => at,
        Status::Partial => return Ok(Status::Partial),
    };
    let minor = match version(buf, at)? {
        Status::Complete(minor) => minor,
        Status::Partial => return Ok(Status::Partial),
    };
    let mut at = at + 8;
    if byte_at!(buf, at) != b' ' {
        return Err(Invalid);
    }
    at += 1;
    let mut code: u16 = 0;
    for _ in 0..3 {
        let digit = byte_at!(buf, at);
        if !digit.is_ascii_digit() {
            return Err(Invalid);
        }
        code = code * 10 + u16::from(digit - b'0');
        at += 1;
    }
    match byte_at!(buf, at) {
        b' ' => {
            at += 1;
            // reason-phrase = *( HTAB / SP / VCHAR / obs-text ): the value bytes.
            at = value_end(buf, at);
            match byte_at!(buf, at) {
                b'\r' => {}
                b'\n' => {
                    return Ok(Status::Complete(StatusLine {
                        minor,
                        code,
                        end: at + 1,
                    }));
                }
                _ => return Err(Invalid),
            }
        }
        b'\r' | b'\n' => {}
        _ => return Err(Invalid),
    }
    let end = match buf.get(at) {
        Some(b'\n') => at + 1,
        _ => match after_crlf(buf, at)? {
            Status::Complete(end) => end,
            Status::Partial => return Ok(Status::Partial),
        },
    };
    Ok(Status::Complete(StatusLine { minor, code, end }))
}

/// A request line the fast lane serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub method: std::ops::Range<usize>,
    pub target: std::ops::Range<usize>,
    /// Where the header block starts.
    pub end: usize,
}

/// `token SP origin-form SP HTTP/1.1 CRLF`, narrower than httparse on purpose: only
/// HTTP/1.1, and only an origin-form target of visible ASCII without `#` (such a target
/// is its own path and query, read in place). `Invalid` here means "not for the fast
/// lane": hyper gets the connection and judges the request with httparse's rules.
/// `Partial` only while the bytes so far can still become such a line.
pub fn request_line(buf: &[u8]) -> Result<Status<RequestLine>, Invalid> {
    let start = match skip_empty_lines(buf, 0)? {
        Status::Complete(at) => at,
        Status::Partial => return Ok(Status::Partial),
    };
    let mut at = start;
    while buf.get(at).is_some_and(|&b| TOKEN[b as usize]) {
        at += 1;
    }
    if byte_at!(buf, at) != b' ' || at == start {
        return Err(Invalid);
    }
    let method = start..at;
    at += 1;
    if byte_at!(buf, at) != b'/' {
        return Err(Invalid);
    }
    let target_start = at;
    while buf
        .get(at)
        .is_some_and(|&b| (b'!'..=b'~').contains(&b) && b != b'#')
    {
        at += 1;
    }
    if byte_at!(buf, at) != b' ' {
        return Err(Invalid);
    }
    let target = target_start..at;
    at += 1;
    match version(buf, at)? {
        Status::Complete(1) => {}
        Status::Complete(_) => return Err(Invalid),
        Status::Partial => return Ok(Status::Partial),
    }
    at += 8;
    let end = match byte_at!(buf, at) {
        b'\n' => at + 1,
        b'\r' => match after_crlf(buf, at)? {
            Status::Complete(end) => end,
            Status::Partial => return Ok(Status::Partial),
        },
        _ => return Err(Invalid),
    };
    Ok(Status::Complete(RequestLine {
        method,
        target,
        end,
    }))
}

#[cfg(test)]
mod tests {
    //! Differential tests: httparse (default configuration) is the reference.

    use std::mem::MaybeUninit;

    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 8;

    /// Every byte value at every position of a word (and of the tail after it): the word
    /// test stops where the table says a name stops.
    #[test]
    fn token_end_agrees_with_the_table_for_every_byte_everywhere() {
        for len in 1..=20 {
            for place in 0..len {
                for byte in 0..=255u8 {
                    let mut buf: Vec<u8> = b"aZ0-x_9Qrs~tU-v1wXyz".get(..len).unwrap().to_vec();
                    buf[place] = byte;
                    for start in 0..len {
                        let naive = (start..len)
                            .find(|&i| !TOKEN[buf[i] as usize])
                            .unwrap_or(len);
                        assert_eq!(token_end(&buf, start), naive, "{buf:?} from {start}");
                    }
                }
            }
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Verdict {
        Complete {
            len: usize,
            code_or_target: Vec<u8>,
            headers: Vec<(Vec<u8>, Vec<u8>)>,
        },
        Partial,
        Invalid,
    }

    fn reference_response(buf: &[u8]) -> Verdict {
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX];
        let mut response = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut storage,
        ) {
            Ok(httparse::Status::Complete(len)) => Verdict::Complete {
                len,
                code_or_target: format!(
                    "{}/{}",
                    response.version.unwrap_or(9),
                    response.code.unwrap_or(0)
                )
                .into_bytes(),
                headers: response
                    .headers
                    .iter()
                    .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                    .collect(),
            },
            Ok(httparse::Status::Partial) => Verdict::Partial,
            Err(_) => Verdict::Invalid,
        }
    }

    fn ours_response(buf: &[u8]) -> Verdict {
        let line = match status_line(buf) {
            Ok(Status::Complete(line)) => line,
            Ok(Status::Partial) => return Verdict::Partial,
            Err(Invalid) => return Verdict::Invalid,
        };
        let mut positions = Vec::new();
        match header_block(buf, line.end, MAX, &mut positions) {
            Ok(Status::Complete(block)) => Verdict::Complete {
                len: block.end,
                code_or_target: format!("{}/{}", line.minor, line.code).into_bytes(),
                headers: positions
                    .iter()
                    .map(|p| (buf[p.name.clone()].to_vec(), buf[p.value.clone()].to_vec()))
                    .collect(),
            },
            Ok(Status::Partial) => Verdict::Partial,
            Err(Invalid) => Verdict::Invalid,
        }
    }

    /// httparse's verdict narrowed to what the fast lane takes (see `request_line`).
    fn reference_request(buf: &[u8]) -> Verdict {
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX];
        let mut request = httparse::Request::new(&mut []);
        match request.parse_with_uninit_headers(buf, &mut storage) {
            Ok(httparse::Status::Complete(len)) => {
                let path = request.path.unwrap_or_default();
                if request.version != Some(1)
                    || !path.starts_with('/')
                    || !path
                        .bytes()
                        .all(|b| (b'!'..=b'~').contains(&b) && b != b'#')
                {
                    return Verdict::Invalid;
                }
                Verdict::Complete {
                    len,
                    code_or_target: format!("{} {path}", request.method.unwrap_or_default())
                        .into_bytes(),
                    headers: request
                        .headers
                        .iter()
                        .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                        .collect(),
                }
            }
            Ok(httparse::Status::Partial) => Verdict::Partial,
            Err(_) => Verdict::Invalid,
        }
    }

    fn ours_request(buf: &[u8]) -> Verdict {
        let line = match request_line(buf) {
            Ok(Status::Complete(line)) => line,
            Ok(Status::Partial) => return Verdict::Partial,
            Err(Invalid) => return Verdict::Invalid,
        };
        let mut positions = Vec::new();
        match header_block(buf, line.end, MAX, &mut positions) {
            Ok(Status::Complete(block)) => {
                let len = block.end;
                let mut code_or_target = buf[line.method].to_vec();
                code_or_target.push(b' ');
                code_or_target.extend_from_slice(&buf[line.target]);
                Verdict::Complete {
                    len,
                    code_or_target,
                    headers: positions
                        .iter()
                        .map(|p| (buf[p.name.clone()].to_vec(), buf[p.value.clone()].to_vec()))
                        .collect(),
                }
            }
            Ok(Status::Partial) => Verdict::Partial,
            Err(Invalid) => Verdict::Invalid,
        }
    }

    /// The request verdicts agree except where ours refuses early: on bytes httparse
    /// still calls incomplete but the fast lane would never take (hyper gets them).
    fn requests_agree(buf: &[u8]) {
        let (ours, reference) = (ours_request(buf), reference_request(buf));
        if ours == Verdict::Invalid && reference == Verdict::Partial {
            // Ours may only refuse early if no completion is fast-lane material:
            // check that the start line is what ours refused.
            assert!(
                request_line(buf).is_err(),
                "early refusal must come from the request line: {:?}",
                String::from_utf8_lossy(buf)
            );
            return;
        }
        assert_eq!(ours, reference, "{:?}", String::from_utf8_lossy(buf));
    }

    fn assert_response(buf: &[u8]) {
        assert_eq!(
            ours_response(buf),
            reference_response(buf),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }

    const RESPONSES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 23:21:23 GMT\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\nx-backend-region: primary\r\n\r\nhello\n",
        b"HTTP/1.0 204\r\n\r\n",
        b"HTTP/1.1 404 \r\nA:\r\nB:   \t \r\nC: x  y \t\r\n\r\n",
        b"\r\n\nHTTP/1.1 500 Internal Server Error\nx: 1\n\n",
        b"HTTP/1.1 200 OK\r\nX-Obs: caf\xc3\xa9 \xff\r\nTab:\tv\tw\r\n\r\n",
        b"HTTP/1.1 200 r\xe9ason\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\nI: 9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nfolded: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nspace : a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad\x7fvalue: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nv: a\x7fb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nv: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nv: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.2 200 OK\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nlong: 0123456789abcdef0123456789abcdef0123456789\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nlong: 0123456789abcdef\t0123456789abcdef\x01123456789\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\rX",
        b"HTTP/1.1 200 OK\r\nA: b\r\n\r",
    ];

    const REQUESTS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: wrk\r\n\r\n",
        b"\r\nPOST /orders?id=1&x=%20 HTTP/1.1\nContent-Length: 2\n\nhi",
        b"GET /a#frag HTTP/1.1\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
        b" GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nfolded: a\r\n b\r\n\r\n",
        b"M-SEARCH /x HTTP/1.1\r\nA:b\r\n\r\n",
        b"GET / HTTP/1.1 \r\n\r\n",
    ];

    #[test]
    fn responses_and_every_prefix_match_httparse() {
        for response in RESPONSES {
            for len in 0..=response.len() {
                assert_response(&response[..len]);
            }
        }
    }

    #[test]
    fn requests_and_every_prefix_match_httparse_narrowed_to_the_fast_lane() {
        for request in REQUESTS {
            for len in 0..=request.len() {
                requests_agree(&request[..len]);
            }
        }
    }

    #[test]
    fn a_typical_response_reads_as_expected() {
        let buf = RESPONSES[0];
        let line = match status_line(buf) {
            Ok(Status::Complete(line)) => line,
            other => panic!("{other:?}"),
        };
        assert_eq!((line.minor, line.code, line.end), (1, 200, 17));
        let mut positions = Vec::new();
        let block = header_block(buf, line.end, 100, &mut positions);
        assert_eq!(
            block,
            Ok(Status::Complete(Block {
                end: buf.len() - 6,
                crlf_only: true
            }))
        );
        let mut bare = Vec::new();
        assert_eq!(
            header_block(b"a: 1\r\nb: 2\n\r\n", 0, 100, &mut bare),
            Ok(Status::Complete(Block {
                end: 13,
                crlf_only: false
            })),
            "a bare LF anywhere is noted"
        );
        assert_eq!(positions.len(), 6);
        assert_eq!(&buf[positions[3].name.clone()], b"Content-Length");
        assert_eq!(&buf[positions[3].value.clone()], b"6");
    }

    /// Bytes a head is made of, weighted toward the ones the rules are about.
    fn head_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            8 => prop::sample::select(b"aZ09-_.:/ ?=&%#*".to_vec()),
            3 => Just(b'\r'),
            3 => Just(b'\n'),
            2 => Just(b' '),
            1 => Just(b'\t'),
            1 => any::<u8>(),
        ]
    }

    fn mutated(base: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(base.to_vec()),
            prop::collection::vec((any::<prop::sample::Index>(), head_byte(), 0..3u8), 0..4),
        )
            .prop_map(|(base, edits)| {
                let mut buf = base.to_vec();
                for (index, byte, op) in edits {
                    let i = index.index(buf.len() + 1);
                    match op {
                        0 => buf.insert(i, byte),
                        1 if i < buf.len() => buf[i] = byte,
                        _ if i < buf.len() => {
                            buf.remove(i);
                        }
                        _ => buf.push(byte),
                    }
                }
                buf
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn mutated_responses_match_httparse(buf in mutated(RESPONSES)) {
            for len in [buf.len(), buf.len() / 2, buf.len().saturating_sub(1)] {
                assert_response(&buf[..len]);
            }
        }

        #[test]
        fn mutated_requests_match_httparse(buf in mutated(REQUESTS)) {
            for len in [buf.len(), buf.len() / 2, buf.len().saturating_sub(1)] {
                requests_agree(&buf[..len]);
            }
        }

        #[test]
        fn random_bytes_match_httparse(buf in prop::collection::vec(head_byte(), 0..64)) {
            let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
            response.extend_from_slice(&buf);
            assert_response(&response);
            let mut request = b"GET / HTTP/1.1\r\n".to_vec();
            request.extend_from_slice(&buf);
            requests_agree(&request);
        }
    }
}
