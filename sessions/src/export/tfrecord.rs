//! The bytes of a TensorBoard event file: the few protobuf fields an `Event` with scalar
//! summaries needs, hand-encoded, and the TFRecord framing that wraps each one.
//!
//! An event file is a sequence of records, each
//! `u64 length | u32 masked_crc32c(length) | data | u32 masked_crc32c(data)` (little-endian),
//! where `data` is one serialized `tensorflow.Event`:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! The first record of a file carries only `file_version: "brain.Event:2"`.

/// The `file_version` of the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Protobuf wire types used here.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Appends `v` as a base-128 varint (low groups first, high bit = more follows).
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from(field << 3 | wire));
}

/// An `int64` field (negative values take ten bytes, as protobuf encodes them).
pub fn put_int64(buf: &mut Vec<u8>, field: u32, v: i64) {
    put_key(buf, field, VARINT);
    put_varint(buf, v as u64);
}

/// A `double` field.
pub fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_key(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// A `float` field.
pub fn put_float(buf: &mut Vec<u8>, field: u32, v: f32) {
    put_key(buf, field, FIXED32);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// A `string`, `bytes` or embedded-message field.
pub fn put_bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_key(buf, field, LEN);
    put_varint(buf, v.len() as u64);
    buf.extend_from_slice(v);
}

/// The first event of a file: its wall time and `file_version`.
pub fn version_event(wall_time: f64) -> Vec<u8> {
    let mut e = Vec::with_capacity(32);
    put_double(&mut e, 1, wall_time);
    put_bytes(&mut e, 3, FILE_VERSION.as_bytes());
    e
}

/// An event with one scalar summary value per `(tag, value)`.
pub fn scalars_event<'a>(
    wall_time: f64,
    step: u64,
    values: impl IntoIterator<Item = (&'a str, f32)>,
) -> Vec<u8> {
    let mut summary = Vec::new();
    let mut value = Vec::new();
    for (tag, v) in values {
        value.clear();
        put_bytes(&mut value, 1, tag.as_bytes());
        put_float(&mut value, 2, v);
        put_bytes(&mut summary, 1, &value);
    }
    let mut e = Vec::with_capacity(summary.len() + 24);
    put_double(&mut e, 1, wall_time);
    put_int64(&mut e, 2, step as i64);
    put_bytes(&mut e, 5, &summary);
    e
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum TFRecord uses.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// TFRecord's masked CRC: rotated right by 15 bits plus a constant, so that a CRC of data
/// that itself holds CRCs stays well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord holding `data`.
pub fn put_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn the_mask_rotates_and_offsets() {
        // ((0xe3069283 >> 15) | (0xe3069283 << 17)) + 0xa282ead8, mod 2³².
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn varints_are_base_128_little_endian() {
        let enc = |v: u64| {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(150), [0x96, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        let mut b = Vec::new();
        put_int64(&mut b, 2, -1);
        assert_eq!(b.len(), 11, "a negative int64 is a ten-byte varint");
    }

    #[test]
    fn fields_carry_their_key_and_payload() {
        let mut b = Vec::new();
        put_double(&mut b, 1, 1.5);
        assert_eq!(b[0], 0x09, "field 1, wire type 1");
        assert_eq!(&b[1..], &1.5f64.to_le_bytes());
        let mut b = Vec::new();
        put_float(&mut b, 2, 0.25);
        assert_eq!(b[0], 0x15, "field 2, wire type 5");
        assert_eq!(&b[1..], &0.25f32.to_le_bytes());
        let mut b = Vec::new();
        put_bytes(&mut b, 1, b"testing");
        assert_eq!(b, [0x0a, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
    }

    #[test]
    fn a_scalars_event_nests_summary_and_values() {
        let e = scalars_event(2.0, 7, [("lr", 0.5f32)]);
        let mut want = Vec::new();
        put_double(&mut want, 1, 2.0);
        put_int64(&mut want, 2, 7);
        // Summary { value { tag: "lr", simple_value: 0.5 } }
        let value = [&[0x0a, 0x02, b'l', b'r', 0x15][..], &0.5f32.to_le_bytes()].concat();
        let summary = [&[0x0a, value.len() as u8][..], &value].concat();
        want.extend_from_slice(&[0x2a, summary.len() as u8]);
        want.extend_from_slice(&summary);
        assert_eq!(e, want);
        let v = version_event(3.0);
        assert_eq!(&v[9..], [&[0x1a, 13][..], FILE_VERSION.as_bytes()].concat());
    }

    #[test]
    fn a_record_frames_length_and_data_with_their_checksums() {
        let mut out = Vec::new();
        put_record(&mut out, b"abc");
        assert_eq!(out.len(), 8 + 4 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(
            &out[8..12],
            &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&out[12..15], b"abc");
        assert_eq!(&out[15..], &masked_crc32c(b"abc").to_le_bytes());
    }
}
