//! A fast hasher for the data plane's maps whose keys come from the configuration or from
//! DNS (socket addresses, pool keys, hostnames), not from clients, so there is no
//! flooding to defend against: SipHash, the default, was a few per cent of the CPU of the
//! per-request pool lookups and of keep-alive probing at 10,000 probes a second. This is
//! FxHash's multiply-rotate (as in rustc), a few nanoseconds per key.

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash's multiply-rotate over 8-byte words.
#[derive(Default, Clone, Copy, Debug)]
pub struct FastHasher(u64);

/// `BuildHasher` for maps and sets keyed by configuration-chosen values.
pub type FastHash = BuildHasherDefault<FastHasher>;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (slot, b) in word.iter_mut().zip(chunk) {
                *slot = *b;
            }
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // FxHash's constant (from Firefox, as in rustc): odd, bits well spread.
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher as _;

    #[test]
    fn equal_keys_hash_alike_and_close_keys_apart() {
        let build = FastHash::default();
        let a: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b: std::net::SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(build.hash_one(a), build.hash_one(a));
        assert_ne!(build.hash_one(a), build.hash_one(b));
    }
}
