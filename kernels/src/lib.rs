//! Fused training ops for wsdscope: each a candle `CustomOp` with forward and backward, a CPU
//! and a CUDA implementation, and a `*_slow` twin built from plain tensor ops for tests.
//!
//! Nothing is here yet: the model currently uses plain candle ops (see `trainer::model`),
//! which are the slow twins these kernels will be checked against.
