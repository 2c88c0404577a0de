//! Whether CUDA is usable: the driver initialises and has the device asked for.

/// The name of CUDA device `ordinal`, or why it cannot be used (no driver, no such device).
/// Never panics: the driver is initialised and queried through error codes only.
pub fn cuda_device_name(ordinal: usize) -> std::result::Result<String, String> {
    use cudarc::driver::result;
    result::init().map_err(|e| format!("the CUDA driver did not initialise ({e})"))?;
    let count = result::device::get_count()
        .map_err(|e| format!("the CUDA driver cannot count devices ({e})"))?;
    if count <= 0 {
        return Err("the CUDA driver reports no devices".into());
    }
    if ordinal >= count as usize {
        return Err(format!(
            "there is no CUDA device {ordinal} (this machine has {count}: cuda:0 to cuda:{})",
            count - 1
        ));
    }
    let dev = result::device::get(ordinal as i32)
        .map_err(|e| format!("CUDA device {ordinal} cannot be opened ({e})"))?;
    result::device::get_name(dev).map_err(|e| format!("CUDA device {ordinal}: {e}"))
}
