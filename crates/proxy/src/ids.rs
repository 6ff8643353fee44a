//! Cheap per-request randomness and request ids.
//!
//! The decision core takes entropy as an argument; the data plane supplies it from a
//! per-thread SplitMix64 stream seeded once from the OS-randomised `RandomState`. No
//! locks, no syscalls per request. Not cryptographic, and it does not need to be: it
//! only spreads picks and makes request ids unique in practice.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use http::HeaderValue;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

/// Next 64 random bits from this thread's stream.
pub fn entropy() -> u64 {
    STATE.with(|state| {
        // SplitMix64 (Steele, Lea, Flood 2014): full period over u64, good avalanche.
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A new random request id.
pub fn new_request_id() -> u128 {
    (u128::from(entropy()) << 64) | u128::from(entropy())
}

/// A request id as 32 lower-case hex digits (like Kong's `X-Kong-Request-Id`),
/// formatted on the stack.
pub fn request_id_bytes(id: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, quarter) in out.chunks_exact_mut(8).zip([96u32, 64, 32, 0]) {
        chunk.copy_from_slice(&hex8((id >> quarter) as u32));
    }
    out
}

/// Eight lower-case hex digits for `v`, computed a word at a time (a table lookup per
/// digit cost 150 instructions per request id).
fn hex8(v: u32) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Spread the eight nibbles into the eight bytes, the lowest nibble in the lowest byte.
    let mut x = u64::from(v);
    x = ((x & 0xFFFF_0000) << 16) | (x & 0xFFFF);
    x = ((x & 0x0000_FF00_0000_FF00) << 8) | (x & 0x0000_00FF_0000_00FF);
    x = ((x & 0x00F0_00F0_00F0_00F0) << 4) | (x & 0x000F_000F_000F_000F);
    // Nibbles 10-15 get a carry into bit 4 from `+ 6`: they become `a`-`f`, not `:`-`?`.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    let ascii = x + u64::from(b'0') * ONES + letters * u64::from(b'a' - b'0' - 10);
    // The most significant digit first.
    ascii.to_be_bytes()
}

/// The header form of a request id ([`request_id_bytes`]).
pub fn request_id_header(id: u128) -> HeaderValue {
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&request_id_bytes(id)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_print_as_lower_case_hex() {
        for id in [0, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 0xa] {
            assert_eq!(request_id_bytes(id), format!("{id:032x}").as_bytes());
        }
        for _ in 0..1000 {
            let id = new_request_id();
            assert_eq!(request_id_bytes(id), format!("{id:032x}").as_bytes());
        }
    }

    #[test]
    fn request_ids_are_hex_and_distinct() {
        let id = new_request_id();
        let a = request_id_header(id);
        assert_eq!(a.to_str().unwrap(), format!("{id:032x}"));
        assert_ne!(a, request_id_header(new_request_id()));
    }
}
