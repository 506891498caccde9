//! What the simulated clients write into sectors, and how a read is
//! turned back into the register values the checker works on.
//!
//! Every 4 KiB sector is a register: its key names the block and the
//! sector, its value is the unique number of the write that put it there
//! (0 for zeros: never written, or trimmed). A written sector carries its
//! value and its key at the front and a pattern derived from both over
//! the rest, so a sector read back from the wrong place, half written or
//! mixed with another write is told apart from any value a client wrote.

use crate::engine::SECTOR;

/// The register a sector is: block and sector index in one number.
pub fn key(block: u64, sector: u64) -> u64 {
    block << 20 | sector
}

/// Splits a key back into (block, sector).
pub fn split_key(key: u64) -> (u64, u64) {
    (key >> 20, key & ((1 << 20) - 1))
}

fn word(value: u64, key: u64, i: usize) -> u64 {
    // A different word at every position: a sector shifted or spliced
    // does not match.
    (value ^ key.rotate_left(17))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(i as u64)
}

/// Fills `out` (one sector) with `value` for `key`.
pub fn fill(out: &mut [u8], key: u64, value: u64) {
    debug_assert_eq!(out.len() as u64, SECTOR);
    out[..8].copy_from_slice(&value.to_le_bytes());
    out[8..16].copy_from_slice(&key.to_le_bytes());
    for (i, w) in out[16..].chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&word(value, key, i).to_le_bytes());
    }
}

/// The value a sector read for `key` holds: 0 for zeros, the writer's
/// value for an intact sector, an error naming what is wrong otherwise.
pub fn decode(sector: &[u8], key: u64) -> Result<u64, String> {
    if sector.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let u = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&sector[r]);
        u64::from_le_bytes(b)
    };
    let (value, held) = (u(0..8), u(8..16));
    if held != key {
        let (b, s) = split_key(key);
        let (hb, hs) = split_key(held);
        return Err(format!(
            "block {b} sector {s} holds the data of block {hb} sector {hs} (value {value:#x})"
        ));
    }
    for (i, w) in sector[16..].chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        if u64::from_le_bytes(b) != word(value, key, i) {
            let (b, s) = split_key(key);
            return Err(format!(
                "block {b} sector {s} is torn or corrupt at byte {} (value {value:#x})",
                16 + 8 * i
            ));
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sector_round_trips_and_damage_is_named() {
        let mut s = vec![0u8; SECTOR as usize];
        assert_eq!(decode(&s, key(3, 5)), Ok(0));
        fill(&mut s, key(3, 5), 0xabc);
        assert_eq!(decode(&s, key(3, 5)), Ok(0xabc));
        assert!(decode(&s, key(3, 6))
            .unwrap_err()
            .contains("holds the data"));
        s[100] ^= 1;
        assert!(decode(&s, key(3, 5))
            .unwrap_err()
            .contains("torn or corrupt"));
    }
}
