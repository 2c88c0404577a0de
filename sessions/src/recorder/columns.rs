//! The HDF5 objects the writer makes: attributes, and extendable datasets that buffer their
//! rows until a flush appends them.

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, Group, H5Type, Location};

use crate::layout::{CHUNK, DEFLATE};

/// Writes a string attribute.
pub(crate) fn put_str(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value
        .parse()
        .map_err(|e| hdf5::Error::from(format!("{e:?}")))?;
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&v)
}

pub(super) fn put<T: H5Type>(loc: &Location, name: &str, value: T) -> hdf5::Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&value)
}

/// One extendable dataset and the rows it has not received yet. `width` 0: a 1-D dataset;
/// otherwise a 2-D one with that many columns (`buf` row-major).
pub(super) struct Col<T> {
    pub(super) ds: Dataset,
    /// Rows in the file.
    pub(super) len: usize,
    pub(super) width: usize,
    pub(super) buf: Vec<T>,
}

impl<T: H5Type + Copy> Col<T> {
    pub(super) fn open(g: &Group, name: &str) -> hdf5::Result<Self> {
        let ds = g.dataset(name)?;
        let shape = ds.shape();
        let width = if shape.len() == 2 { shape[1] } else { 0 };
        Ok(Col {
            ds,
            len: shape.first().copied().unwrap_or(0),
            width,
            buf: Vec::new(),
        })
    }

    pub(super) fn rows(&self) -> usize {
        match self.width {
            0 => self.buf.len(),
            w => self.buf.len() / w,
        }
    }

    /// Appends the buffered rows. On failure nothing is forgotten: a later call writes them
    /// again from the same position.
    pub(super) fn flush(&mut self) -> hdf5::Result<()> {
        let n = self.rows();
        if n == 0 {
            return Ok(());
        }
        let (from, to) = (self.len, self.len + n);
        if self.width == 0 {
            self.ds.resize(to)?;
            self.ds.write_slice(&self.buf, from..to)?;
        } else {
            self.ds.resize((to, self.width))?;
            let arr = ndarray::ArrayView2::from_shape((n, self.width), &self.buf)
                .map_err(|e| hdf5::Error::from(e.to_string()))?;
            self.ds.write_slice(arr, (from..to, ..))?;
        }
        self.len = to;
        self.buf.clear();
        Ok(())
    }
}

/// An extendable, compressed 1-D dataset (for the integer columns, which compress well).
pub(super) fn new_1d<T: H5Type>(g: &Group, name: &str) -> hdf5::Result<Dataset> {
    g.new_dataset::<T>()
        .chunk(CHUNK)
        .shuffle()
        .deflate(DEFLATE)
        .shape(0..)
        .create(name)
}

/// An extendable 1-D float64 dataset, uncompressed: measured values are noisy in their low
/// bits, so deflate saves only about a third of their bytes while inflating them was most of
/// the time `replay` needs to open a long session.
pub(super) fn new_f64(g: &Group, name: &str) -> hdf5::Result<Dataset> {
    g.new_dataset::<f64>().chunk(CHUNK).shape(0..).create(name)
}
