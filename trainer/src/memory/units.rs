//! The units the estimate counts in: KiB and MiB, the saturation of its u128 arithmetic to
//! u64, and bytes written for people (`21.3 GiB`).

pub(super) const KIB: u128 = 1 << 10;
pub(super) const MIB: u128 = 1 << 20;

pub(super) fn sat(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// Bytes in binary units: `512 B`, `3.4 KiB`, `21.3 GiB`, `1.2 TiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
