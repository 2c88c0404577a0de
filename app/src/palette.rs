//! Colour tables shared by the terminal views and the exported figures, written once.

/// Viridis (van der Walt & Smith, matplotlib's default), sampled at nine evenly spaced
/// points from dark violet to yellow, lightness rising monotonically; users of the table
/// interpolate linearly in sRGB between stops.
pub const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2d, 0x7b),
    (0x3b, 0x52, 0x8b),
    (0x2c, 0x72, 0x8e),
    (0x21, 0x90, 0x8c),
    (0x27, 0xad, 0x81),
    (0x5d, 0xc8, 0x63),
    (0xaa, 0xdc, 0x32),
    (0xfd, 0xe7, 0x25),
];
