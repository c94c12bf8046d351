//! Payload masking (RFC 6455 §5.3), a machine word at a time.

/// XORs `buf` in place with `key`, as if `buf` started `offset` bytes into a masked payload.
///
/// Masking is its own inverse, so this both masks and unmasks. The buffer is processed eight
/// bytes at a time with unaligned word loads (a payload after a 6-byte header is rarely
/// aligned); only the last few bytes go one by one.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    let key32 = u32::from_ne_bytes(key);
    let key64 = u64::from(key32) << 32 | u64::from(key32);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ key64;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    apply_mask_bytes(words.into_remainder(), key, 0);
}

/// XORs `src` with `key` into `dst` (one fused pass: copy and unmask), starting at `offset`.
///
/// # Panics
/// If `dst` and `src` differ in length.
#[inline]
pub fn copy_unmasked(dst: &mut [u8], src: &[u8], key: [u8; 4], offset: usize) {
    assert_eq!(dst.len(), src.len(), "copy_unmasked: length mismatch");
    let key = rotate_key(key, offset);
    let key32 = u32::from_ne_bytes(key);
    let key64 = u64::from(key32) << 32 | u64::from(key32);
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (dw, sw) in (&mut d).zip(&mut s) {
        let v = u64::from_ne_bytes(sw.try_into().expect("chunk of 8")) ^ key64;
        dw.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, (db, sb)) in d.into_remainder().iter_mut().zip(s.remainder()).enumerate() {
        *db = sb ^ key[i & 3];
    }
}

/// Byte-at-a-time reference implementation of [`apply_mask`].
#[inline]
pub fn apply_mask_bytes(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) & 3];
    }
}

#[inline]
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut k = key;
    k.rotate_left(offset & 3);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_reference() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=64 {
            for start in 0..=3 {
                for offset in 0..=3 {
                    let mut fast = data[start..start + len].to_vec();
                    let mut slow = fast.clone();
                    apply_mask(&mut fast, key, offset);
                    apply_mask_bytes(&mut slow, key, offset);
                    assert_eq!(fast, slow, "len {len} start {start} offset {offset}");
                    let mut fused = vec![0; len];
                    copy_unmasked(&mut fused, &data[start..start + len], key, offset);
                    assert_eq!(fused, slow, "fused len {len} start {start} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn unaligned_subslices() {
        // Exercise every alignment of the slice start within a buffer.
        let key = [1, 2, 3, 4];
        let mut buf = [0u8; 100];
        for start in 0..8 {
            let mut slow = buf[start..].to_vec();
            apply_mask(&mut buf[start..], key, 1);
            apply_mask_bytes(&mut slow, key, 1);
            assert_eq!(&buf[start..], &slow[..]);
        }
    }

    #[test]
    fn split_masking_equals_whole() {
        let key = [9, 8, 7, 6];
        let data: Vec<u8> = (0..97u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for cut in 0..data.len() {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut);
            assert_eq!(parts, whole, "cut {cut}");
        }
    }

    #[test]
    fn rfc6455_example() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}
