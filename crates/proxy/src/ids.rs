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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = (31 - i) * 4;
        let nibble = ((id >> shift) & 0xF) as usize;
        *byte = HEX.get(nibble).copied().unwrap_or(b'0');
    }
    out
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
    fn request_ids_are_hex_and_distinct() {
        let id = new_request_id();
        let a = request_id_header(id);
        assert_eq!(a.to_str().unwrap(), format!("{id:032x}"));
        assert_ne!(a, request_id_header(new_request_id()));
    }
}
