//! Delta Lake deletion vectors: the rows of a data file a table version leaves out,
//! stored beside the table as a file the `add` action names (Delta protocol,
//! "Deletion Vectors"; storage type `u`).
//!
//! The bitmap is Delta's `RoaringBitmapArray` in its portable form: the magic number
//! 1681511377 (little-endian), the count of 32-bit bitmaps, then per bitmap its high
//! 32 bits of row index and a 32-bit Roaring bitmap in the portable format without run
//! containers (cookie 12346; per 65,536 rows an array container of up to 4,096 `u16`s,
//! else a bitmap container of 8 KiB). The file is a version byte (1), then the bitmap
//! framed by its size and its CRC-32, both big-endian; the descriptor's `offset` is 1.

use serde_json::{Value, json};

const MAGIC: u32 = 1_681_511_377;
const NO_RUN_COOKIE: u32 = 12_346;
const ARRAY_MAX: usize = 4_096;

/// The portable `RoaringBitmapArray` of the row indexes (ascending, no duplicates).
pub fn bitmap(rows: &[u64]) -> Vec<u8> {
    let mut out = MAGIC.to_le_bytes().to_vec();
    let high = by_key(rows.iter().map(|&row| ((row >> 32) as u32, row as u32)));
    out.extend_from_slice(&(high.len() as u64).to_le_bytes());
    for (key, values) in &high {
        out.extend_from_slice(&key.to_le_bytes());
        roaring32(values, &mut out);
    }
    out
}

/// Ascending values split into their high and low halves: the low halves of each high
/// half, in order.
fn by_key<K: PartialEq, L>(values: impl Iterator<Item = (K, L)>) -> Vec<(K, Vec<L>)> {
    let mut out: Vec<(K, Vec<L>)> = Vec::new();
    for (key, low) in values {
        match out.last_mut() {
            Some((k, lows)) if *k == key => lows.push(low),
            _ => out.push((key, vec![low])),
        }
    }
    out
}

/// A 32-bit Roaring bitmap, portable format, no run containers.
fn roaring32(values: &[u32], out: &mut Vec<u8>) {
    let containers = by_key(values.iter().map(|&v| ((v >> 16) as u16, v as u16)));
    out.extend_from_slice(&NO_RUN_COOKIE.to_le_bytes());
    out.extend_from_slice(&(containers.len() as u32).to_le_bytes());
    for (key, lows) in &containers {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&((lows.len() - 1) as u16).to_le_bytes());
    }
    let size = |lows: &Vec<u16>| if lows.len() <= ARRAY_MAX { 2 * lows.len() } else { 8_192 };
    let header = 8 + 8 * containers.len();
    let mut offset = header;
    for (_, lows) in &containers {
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        offset += size(lows);
    }
    for (_, lows) in &containers {
        if lows.len() <= ARRAY_MAX {
            for low in lows {
                out.extend_from_slice(&low.to_le_bytes());
            }
        } else {
            let mut words = [0u64; 1_024];
            for &low in lows {
                words[usize::from(low) >> 6] |= 1 << (low & 63);
            }
            for word in words {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }
}

/// ZeroMQ's Base85 (Z85), as Delta encodes a deletion vector's id; the input is padded
/// with zeros to a multiple of four bytes.
pub fn z85(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 85] =
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    let mut out = String::with_capacity(bytes.len().div_ceil(4) * 5);
    for chunk in bytes.chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        let mut value = u32::from_be_bytes(word);
        let mut digits = [0u8; 5];
        for digit in digits.iter_mut().rev() {
            *digit = ALPHABET[(value % 85) as usize];
            value /= 85;
        }
        out.extend(digits.iter().map(|&d| d as char));
    }
    out
}

/// A deletion vector ready to store: the file's name (in the table's root), its bytes
/// and the descriptor an `add` or `remove` action carries.
pub struct DeletionVector {
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub descriptor: Value,
}

/// The deletion vector of `rows` (ascending row indexes of one data file), its file
/// named by `id` (16 bytes, a UUID).
pub fn file(rows: &[u64], id: [u8; 16]) -> DeletionVector {
    let bitmap = bitmap(rows);
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&(bitmap.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&bitmap);
    bytes.extend_from_slice(&crc32fast::hash(&bitmap).to_be_bytes());
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
    DeletionVector {
        file_name: format!("deletion_vector_{uuid}.bin"),
        bytes,
        descriptor: json!({
            "storageType": "u",
            "pathOrInlineDv": z85(&id),
            "offset": 1,
            "sizeInBytes": bitmap.len(),
            "cardinality": rows.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_bitmap_is_one_array_container() {
        // Rows 3 and 7: magic, one 32-bit bitmap (key 0), cookie, one container
        // (key 0, cardinality 2), its offset (16), then the two values.
        let hex: String = bitmap(&[3, 7]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "d1d339640100000000000000000000003a30000001000000000001001000000003000700");
    }

    #[test]
    fn a_dense_chunk_is_a_bitmap_container_and_high_rows_get_their_own_bitmap() {
        let mut rows: Vec<u64> = (0..5_000).collect();
        rows.push(70_000);
        rows.push((1 << 32) + 5);
        let bytes = bitmap(&rows);
        // Two 32-bit bitmaps; the first has a bitmap container (rows 0..5000) and an array one.
        assert_eq!(u64::from_le_bytes(bytes[4..12].try_into().unwrap()), 2);
        let first = 12 + 4;
        assert_eq!(u32::from_le_bytes(bytes[first + 4..first + 8].try_into().unwrap()), 2);
        let first_len = 8 + 8 * 2 + 8_192 + 2;
        let second = first + first_len;
        assert_eq!(u32::from_le_bytes(bytes[second..second + 4].try_into().unwrap()), 1, "high key");
        assert_eq!(bytes.len(), second + 4 + 8 + 8 + 2);
        // The bitmap container has exactly rows 0..5000 set.
        let words = &bytes[first + 24..first + 24 + 8_192];
        let set: u32 = words.iter().map(|b| b.count_ones()).sum();
        assert_eq!(set, 5_000);
    }

    #[test]
    fn a_reference_decoder_reads_back_every_kind_of_container() {
        // Sparse and dense chunks, a chunk of exactly 4,096 and of 4,097 rows (the array's
        // limit), a full chunk, and rows past 2^32 (a second 32-bit bitmap).
        let mut rows: Vec<u64> = (0..100).map(|i| i * 7).collect();
        rows.extend((1 << 16..(1 << 16) + 4_096).map(|i| i as u64));
        rows.extend((2 << 16..(2 << 16) + 4_097).map(|i| i as u64));
        rows.extend((3 << 16..4 << 16).map(|i| i as u64));
        rows.extend((0..50).map(|i| (5 << 16) + i * 1_000));
        rows.extend([(1 << 32) + 3, (1 << 32) + 70_000, (7 << 32) + 1]);
        let bytes = bitmap(&rows);
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), MAGIC);
        let decoded = roaring::RoaringTreemap::deserialize_from(&bytes[4..]).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<u64>>(), rows);
    }

    #[test]
    fn z85_matches_the_reference_vector() {
        // The ZeroMQ RFC 32 test vector.
        assert_eq!(z85(&[0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]), "HelloWorld");
    }

    #[test]
    fn the_file_frames_the_bitmap_with_its_size_and_checksum() {
        let dv = file(&[1, 2, 3], [7; 16]);
        let size = dv.descriptor["sizeInBytes"].as_u64().unwrap() as usize;
        assert_eq!(dv.bytes[0], 1);
        assert_eq!(u32::from_be_bytes(dv.bytes[1..5].try_into().unwrap()) as usize, size);
        assert_eq!(dv.bytes.len(), 1 + 4 + size + 4);
        assert_eq!(dv.descriptor["cardinality"], 3);
        assert_eq!(dv.descriptor["pathOrInlineDv"].as_str().unwrap().len(), 20);
        assert_eq!(dv.file_name, "deletion_vector_07070707-0707-0707-0707-070707070707.bin");
    }
}
