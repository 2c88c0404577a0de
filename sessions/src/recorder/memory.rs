//! How much memory HDF5 may keep for a session file: the chunk and metadata caches of the
//! writer's (and the reader's) open file, and the library's free lists.

use crate::layout::MAX_CHUNK_BYTES;

/// Raw-data chunk cache of every dataset the writer holds open: room for the chunk each
/// appends to and one more (no chunk is larger than [`MAX_CHUNK_BYTES`]). HDF5 2's default,
/// 8191 slots and 8 MiB per dataset, costs about 80 KiB per open dataset and fills with
/// finished chunks: a long session's memory would grow with it. Fully written chunks go first
/// (w0 = 1).
pub(crate) const CHUNK_CACHE_SLOTS: usize = 11;
pub(crate) const CHUNK_CACHE_BYTES: usize = 2 * MAX_CHUNK_BYTES;
/// The metadata cache of a session file: at most 4 MiB. A writer touches a few blocks of
/// each dataset's chunk index per flush; HDF5's default lets the cache grow to 32 MiB of
/// index blocks it will not need again, so a long session's memory would grow with it.
pub(crate) fn metadata_cache() -> hdf5::plist::file_access::MetadataCacheConfig {
    hdf5::plist::file_access::MetadataCacheConfig {
        initial_size: 1 << 21,
        max_size: 1 << 22,
        ..Default::default()
    }
}

/// Caps the memory HDF5 keeps on its internal free lists for reuse (by default up to 16 MiB
/// of chunk-sized blocks alone, which a long recording fills and never returns). Once per
/// process.
pub(super) fn limit_hdf5_free_lists() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        hdf5::sync::sync(|| {
            // SAFETY: a plain call into the library, under the crate's global HDF5 lock; the
            // arguments are byte limits (global, per list) for the regular, array and block
            // free lists.
            unsafe {
                hdf5_sys::h5::H5set_free_list_limits(
                    1 << 20,
                    1 << 18,
                    1 << 20,
                    1 << 16,
                    1 << 21,
                    1 << 18,
                )
            };
        });
    });
}
