//! Cost of parsing the heads the proxy parses on every request: an upstream response
//! (status line and seven headers, as the benchmark backend sends) and a client
//! request (as `wrk` sends), by [`sluice_proxy::head`] and by httparse, the parser it
//! replaced on these two paths.
//!
//! Run: `cargo bench -p sluice-proxy --bench head`. On a shared 2-core VM wall-clock
//! numbers wander by several percent between runs; compare within one run.

use std::hint::black_box;
use std::mem::MaybeUninit;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_proxy::head;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 23:21:23 GMT\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\nx-backend-region: primary\r\nx-backend-instance: p\r\n\r\nhello\n";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18000\r\n\r\n";

fn heads(c: &mut Criterion) {
    let mut positions = Vec::with_capacity(16);
    c.bench_function("response/sluice", |b| {
        b.iter(|| {
            positions.clear();
            let buf = black_box(RESPONSE);
            let Ok(head::Status::Complete(line)) = head::status_line(buf) else {
                unreachable!()
            };
            black_box(head::header_block(buf, line.end, 100, &mut positions))
        })
    });
    c.bench_function("response/httparse", |b| {
        b.iter(|| {
            let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
            let mut response = httparse::Response::new(&mut []);
            black_box(
                httparse::ParserConfig::default()
                    .parse_response_with_uninit_headers(
                        &mut response,
                        black_box(RESPONSE),
                        &mut storage,
                    )
                    .is_ok(),
            )
        })
    });
    c.bench_function("request/sluice", |b| {
        b.iter(|| {
            positions.clear();
            let buf = black_box(REQUEST);
            let Ok(head::Status::Complete(line)) = head::request_line(buf) else {
                unreachable!()
            };
            black_box(head::header_block(buf, line.end, 64, &mut positions))
        })
    });
    c.bench_function("request/httparse", |b| {
        b.iter(|| {
            let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
            let mut request = httparse::Request::new(&mut []);
            black_box(
                request
                    .parse_with_uninit_headers(black_box(REQUEST), &mut storage)
                    .is_ok(),
            )
        })
    });
}

criterion_group!(benches, heads);
criterion_main!(benches);
